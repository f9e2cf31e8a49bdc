#!/usr/bin/env bash
# The CUDA backend's checks on a lent GPU machine (issue 15), in one run: build with the CUDA backend for the card
# here, then every CUDA op against the CPU op and float64 (tests/test_kernels_cuda.py; outputs poisoned first), with
# the card's name. Grows with the backend (the engine's greedy text against torch, the 4-bit GEMV against the
# card's copy bandwidth, throughput beside HF bf16) as those land. Dry-runs on a machine without a GPU: the build is
# checked and the device tests skip, saying why.
#   device run: bash scripts/gpu_check.sh      (logs under $OUT when set)
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH=src:. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt" || true
# sm_90a on Hopper (H100/H200), else the card's own compute capability.
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
[ "$ARCH" = "90" ] && ARCH=90a
export LMRT_CUDA=ON LMRT_CUDA_ARCHS=${ARCH:-80}
echo "building with CUDA for sm_$LMRT_CUDA_ARCHS"
# (no installs there: the image's python3, pybind11, numpy and pytest are used as they are)
JOBS=${JOBS:-16} bash scripts/dev_build.sh 2>&1 | tee "$OUT/build.log" | grep -E "error|warning|lmrt:" | head -20
python3 -c "from lmrt._core import kernels as K; print('cuda_available:', K.cuda_available())" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -rs -p no:cacheprovider tests/test_kernels_cuda.py 2>&1 | tee "$OUT/tests.log" | tail -15
