#!/usr/bin/env bash
# The CUDA backend's checks on a lent GPU machine (issue 15), in one run: build with the CUDA backend for the card
# here, then every CUDA op against the CPU op and float64 (tests/test_kernels_cuda.py; outputs poisoned first), with
# the card's name; the engine on the GPU (tests/test_ops_model.py); the 4-bit decode GEMV against the card's copy
# bandwidth (benchmarks/bench_cuda.py); the engine's greedy text against torch on a Llama of real shapes and its
# throughput beside HF bf16 (benchmarks/bench_cuda_engine.py). Dry-runs on a machine without a GPU (GPU_ARCH=90a
# to compile for Hopper there): the build is checked, the device tests skip saying why, the benches exit saying why.
#   device runs (15 minutes of device time in all, 600 s a call; a start takes 1-2 min, so the calls go back to
#   back on the warm machine, whose build stays): PHASES="tests bench" (timeout_s 300; inner limits: build ~40 s on
#   16 cores, tests 150, bench 90), then at once PHASES="engine" (timeout_s 360; inner 300), then with what is
#   left PHASES="memcheck" (timeout_s 150). Logs under $OUT when set.
# PHASES picks the parts (default: tests bench engine memcheck, in this order; the build always runs; the default's
# inner limits add up to more than one call's 600 s, so a device run names its phases). "compiled" (not in the default:
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
JOBS=${JOBS:-16} bash scripts/dev_build.sh >"$OUT/build.log" 2>&1
echo "build rc=$?"
grep -E "error|warning|lmrt:" "$OUT/build.log" | head -20
python3 -c "from lmrt._core import kernels as K; print('cuda_available:', K.cuda_available())" | tee -a "$OUT/gpu.txt"
PHASES=${PHASES:-tests bench engine memcheck}
phase() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
date +"[%T] phases: $PHASES"
if phase tests; then
  # -v: a test that hangs is named by the last line; faulthandler dumps where it hangs; -rfEs: failures and skips
  timeout 150 python3 -m pytest -v -rfEs -o faulthandler_timeout=60 -p no:cacheprovider tests/test_kernels_cuda.py \
    tests/test_ops_model.py >"$OUT/tests.log" 2>&1
  echo "tests rc=$?"
  grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -25
fi
# The 4-bit decode GEMV against the card's copy bandwidth (its RESULTS.md section comes back under $OUT).
phase bench && date +"[%T] bench_cuda" &&
  timeout 90 python3 benchmarks/bench_cuda.py --reps 10 --results "$OUT/results_section.md" 2>&1 |
  tee "$OUT/bench_cuda.log"
# The engine on the GPU: greedy against torch on a random Llama of real shapes (dense bf16 and 4-bit), then batch-1
# and 64-request throughput beside HF bf16 (its section appended to the same file).
phase engine && date +"[%T] bench_cuda_engine" &&
  timeout 300 python3 benchmarks/bench_cuda_engine.py --results "$OUT/results_section.md" 2>&1 |
  tee "$OUT/bench_cuda_engine.log" | grep -v -i warn | tail -14
# HF bf16 with a static cache and torch.compile, the issue's optional peer (its own section, or why it did not build).
phase compiled && date +"[%T] bench_cuda_engine --hf-compiled" &&
  timeout 420 python3 benchmarks/bench_cuda_engine.py --hf-compiled --results "$OUT/results_section.md" 2>&1 |
  tee "$OUT/hf_compiled.log" | grep -v -i warn | tail -6
# compute-sanitizer: on PATH, else the toolkit's; each sanitizer phase says when it has none, and its exit code.
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
sanitize() {  # tool, log name, pytest -k expression ("" for all)
  if [ -z "$SANITIZER" ]; then
    echo "$1: no compute-sanitizer here"
    return
  fi
  date +"[%T] $1"
  timeout 120 "$SANITIZER" --tool "$1" --error-exitcode 7 python3 -m pytest -q -x -p no:cacheprovider \
    tests/test_kernels_cuda.py ${3:+-k "$3"} >"$OUT/$2.log" 2>&1
  echo "$1 rc=$? (7: errors found; 124: cut at 120 s)"
  grep -E "ERROR SUMMARY|passed|failed|Invalid|hazard|Barrier|not supported" "$OUT/$2.log" | head -8
}
# Out-of-bounds accesses and uninitialised reads of device memory in the ops.
phase memcheck && sanitize memcheck memcheck
# Shared-memory races and barrier misuse (racecheck, synccheck; not in the default: each replays the kernels slowly)
# in the kernels that share memory within a block: sampling, the tiled and split attention, the tensor-core linear,
# the block reductions of the GEMV and the norms.
SHARED_K="sampling or greedy or paged_attention or int4_channel or tc_cuda or linear_w4_cuda or rmsnorm"
for tool in racecheck synccheck; do
  phase $tool && sanitize $tool $tool "$SHARED_K"
done
date +"[%T] done"
