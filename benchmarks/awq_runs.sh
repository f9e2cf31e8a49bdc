#!/bin/sh
# The four runs of benchmarks/AWQ_RESULTS.md: AWQ and RTN at group sizes 64 and 32 on the default model,
# default calibration text (non-GPL licences) and evaluation text (GPL-3). Usage: benchmarks/awq_runs.sh OUT_ROOT
set -e
out=${1:-/tmp/lmrt-awq}
export HF_HUB_OFFLINE=1
for run in "awq 64" "rtn 64" "awq 32" "rtn 32"; do
    set -- $run
    python -m quantize.cli --method "$1" --group-size "$2" --threads 2 --out "$out/$1-g$2" > "$out.$1-g$2.log" 2>&1
done
