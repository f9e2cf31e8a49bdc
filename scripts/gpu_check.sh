#!/usr/bin/env bash
# The CUDA backend's checks on a lent GPU machine (issue 15), in one run: build with the CUDA backend for the card
# here, then every CUDA op against the CPU op and float64 (tests/test_kernels_cuda.py; outputs poisoned first), with
# the card's name; the engine on the GPU (tests/test_ops_model.py); the 4-bit decode GEMV against the card's copy
# bandwidth (benchmarks/bench_cuda.py); the engine's greedy text against torch on a Llama of real shapes and its
# throughput beside HF bf16 (benchmarks/bench_cuda_engine.py). Dry-runs on a machine without a GPU (GPU_ARCH=90a
# to compile for Hopper there): the build is checked, the device tests skip saying why, the benches exit saying why.
#   device run: bash scripts/gpu_check.sh      (logs under $OUT when set)
# PHASES picks the parts (default: tests bench engine memcheck, in this order; the build always runs), so one device
# run can fit its time limit: e.g. PHASES="tests engine" bash scripts/gpu_check.sh. "compiled" (not in the default:
# torch.compile's first build can take minutes) times HF bf16 with a static cache and torch.compile; "racecheck" and
# "synccheck" (not in the default either) run compute-sanitizer's shared-memory checks on the block-wide kernels.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH=src:. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt" || true
# sm_90a on Hopper (H100/H200), else the card's own compute capability.
ARCH=${GPU_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')}
[ "$ARCH" = "90" ] && ARCH=90a
export LMRT_CUDA=ON LMRT_CUDA_ARCHS=${ARCH:-80}
echo "building with CUDA for sm_$LMRT_CUDA_ARCHS"
# (no installs there: the image's python3, pybind11, numpy and pytest are used as they are)
JOBS=${JOBS:-16} bash scripts/dev_build.sh 2>&1 | tee "$OUT/build.log" | grep -E "error|warning|lmrt:" | head -20
python3 -c "from lmrt._core import kernels as K; print('cuda_available:', K.cuda_available())" | tee -a "$OUT/gpu.txt"
PHASES=${PHASES:-tests bench engine memcheck}
phase() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
date +"[%T] phases: $PHASES"
if phase tests; then
  timeout 240 python3 -m pytest -q -rs -p no:cacheprovider tests/test_kernels_cuda.py tests/test_ops_model.py 2>&1 |
    tee "$OUT/tests.log" | tail -15
fi
# The 4-bit decode GEMV against the card's copy bandwidth (its RESULTS.md section comes back under $OUT).
phase bench && date +"[%T] bench_cuda" &&
  timeout 180 python3 benchmarks/bench_cuda.py --reps 10 --results "$OUT/results_section.md" 2>&1 |
  tee "$OUT/bench_cuda.log"
# The engine on the GPU: greedy against torch on a random Llama of real shapes (dense bf16 and 4-bit), then batch-1
# and 64-request throughput beside HF bf16 (its section appended to the same file).
phase engine && date +"[%T] bench_cuda_engine" &&
  timeout 420 python3 benchmarks/bench_cuda_engine.py --results "$OUT/results_section.md" 2>&1 |
  tee "$OUT/bench_cuda_engine.log" | grep -v -i warn | tail -14
# HF bf16 with a static cache and torch.compile, the issue's optional peer (its own section, or why it did not build).
phase compiled && date +"[%T] bench_cuda_engine --hf-compiled" &&
  timeout 420 python3 benchmarks/bench_cuda_engine.py --hf-compiled --results "$OUT/results_section.md" 2>&1 |
  tee "$OUT/hf_compiled.log" | grep -v -i warn | tail -6
# Out-of-bounds accesses and uninitialised reads of device memory in the ops (compute-sanitizer, where it runs).
if phase memcheck && command -v compute-sanitizer >/dev/null; then
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 7 python3 -m pytest -q -x -p no:cacheprovider \
    tests/test_kernels_cuda.py 2>&1 | tee "$OUT/memcheck.log" | grep -E "ERROR SUMMARY|passed|failed|Invalid" | head -8
fi
# Shared-memory races and barrier misuse (racecheck, synccheck; not in the default: each replays the kernels slowly)
# in the kernels that share memory within a block: sampling, the tiled and split attention, the tensor-core linear,
# the block reductions of the GEMV and the norms.
SHARED_K="sampling or greedy or paged_attention or int4_channel or tc_cuda or linear_w4_cuda or rmsnorm"
for tool in racecheck synccheck; do
  if phase $tool && command -v compute-sanitizer >/dev/null; then
    date +"[%T] $tool"
    timeout 150 compute-sanitizer --tool $tool --error-exitcode 7 python3 -m pytest -q -x -p no:cacheprovider \
      tests/test_kernels_cuda.py -k "$SHARED_K" 2>&1 | tee "$OUT/$tool.log" |
      grep -E "ERROR SUMMARY|passed|failed|hazard|Barrier" | head -8
  fi
done
date +"[%T] done"
