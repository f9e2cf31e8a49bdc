#!/usr/bin/env bash
# Run on a lent GPU machine (its CPU has AVX-512, maybe AMX): build there, run the kernel and
# thread-pool tests on every ISA path it has and the engine tests with each path forced, then
# (BENCH=1) lmrt vs HF prefill/decode on a random model of the default model's shapes, all cores.
# ENGINE_REPS=N runs each ISA's engine tests N times (a rare hang shows more often).
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH=src:. PYTHONUNBUFFERED=1
LOG=/tmp/devcheck; rm -rf $LOG; mkdir -p $LOG  # all logs; tarred into $OUT at the end
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core" ; grep -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
JOBS=16 BUILD_TYPE=RelWithDebInfo bash scripts/dev_build.sh 2>&1 | grep -E "error|warning" | head -20
python3 -c "import lmrt; print(lmrt.system_info())"

# Runs a command with output to $LOG/<name>.log, bounded to <limit> seconds. When it is stuck (past the
# limit, or faulthandler has dumped the Python stacks), every thread's native stack is saved first
# (cuda-gdb attaches to CPU-only programs; the build keeps symbols), with each thread's state.
bounded() {
  local name=$1 limit=$2; shift 2
  "$@" > "$LOG/$name.log" 2>&1 &
  local pid=$! t=0
  while kill -0 $pid 2>/dev/null; do
    sleep 1; t=$((t + 1))
    if [ $t -ge "$limit" ] || grep -q "Timeout (0:" "$LOG/$name.log"; then
      echo "   stuck after ${t}s: native stacks in $name.stacks"
      { for d in /proc/$pid/task/*; do echo "tid $(basename $d) $(cut -d' ' -f3,14,15 $d/stat) $(cat $d/comm)"; done
        sleep 2; echo "-- 2 s later (state utime stime)"
        for d in /proc/$pid/task/*; do echo "tid $(basename $d) $(cut -d' ' -f3,14,15 $d/stat)"; done
        timeout 90 "$(command -v cuda-gdb || command -v gdb || echo gdb)" -p $pid -batch -ex "info threads" -ex "thread apply all bt 30" 2>&1; } > "$LOG/$name.stacks"
      kill -9 $pid; break
    fi
  done
  wait $pid; echo "   rc=$? after ${t}s"
}

bounded kernels 300 python3 -m pytest tests/test_kernels.py tests/test_kernels_quant.py tests/test_kernels_tiles.py \
  tests/test_threadpool.py -q -rs -p no:cacheprovider
tail -3 "$LOG/kernels.log"
# The engine tests hung here 3 times in ~20 runs before the thread-pool fix of ccee4c3: repeat them (ENGINE_REPS).
for isa in avx512 avx2 scalar; do
  for rep in $(seq "${ENGINE_REPS:-1}"); do
    echo "== engine tests, LMRT_ISA=$isa, run $rep (log: engine_${isa}_$rep.log)"
    LMRT_ISA=$isa bounded "engine_${isa}_$rep" 120 python3 -m pytest tests/test_engine.py -v -p no:cacheprovider \
      -p faulthandler -o faulthandler_timeout=30
    grep -E "passed|failed|Timeout|FAILED" "$LOG/engine_${isa}_$rep.log" | tail -4
  done
done
if [ "${BENCH:-0}" = 1 ]; then
  echo "== bench_prefill (all physical cores)"
  python3 benchmarks/bench_prefill.py --reps 5 --decode 64 2>&1 | tail -12
fi
[ -n "${OUT:-}" ] && tar czf "$OUT/devcheck_logs.tgz" -C /tmp devcheck
