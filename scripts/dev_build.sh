#!/usr/bin/env bash
# Developer build: compiles lmrt._core into build/dev and copies it next to the
# sources, so `PYTHONPATH=src:. pytest tests/` runs against this tree without pip.
# BUILD_TYPE=RelWithDebInfo keeps symbols and line tables (same -O3 code) for a debugger.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build/dev -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
  -Dpybind11_DIR="$(${PYTHON:-python3} -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(which ${PYTHON:-python3})" >/dev/null
cmake --build build/dev -j"${JOBS:-2}"
# Replace the module by a rename, not in place: a process still running the old one keeps its mapping
# (copying over a mapped .so makes that process die of SIGBUS).
for so in build/dev/_core*.so; do
  cp "$so" "src/lmrt/.$(basename "$so").tmp" && mv -f "src/lmrt/.$(basename "$so").tmp" "src/lmrt/$(basename "$so")"
done
