#!/usr/bin/env bash
# Run on a lent GPU machine (its CPU has AVX-512): build there, then run the kernel tests
# on every ISA path it has and the engine tests with the AVX-512 and scalar paths forced.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH=. PYTHONUNBUFFERED=1
lscpu | grep -E "Model name" ; grep -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
JOBS=16 bash scripts/dev_build.sh 2>&1 | grep -E "error|warning" | head -20
python3 -c "import lmrt; print(lmrt.system_info())"
python3 -m pytest tests/test_kernels.py tests/test_kernels_quant.py -q -rs -p no:cacheprovider 2>&1 | tail -4
for isa in avx512 avx2 scalar; do
  echo "== engine tests, LMRT_ISA=$isa"
  LMRT_ISA=$isa python3 -m pytest tests/test_engine.py -q -p no:cacheprovider 2>&1 | tail -2
done
