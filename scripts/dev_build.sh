#!/usr/bin/env bash
# Developer build: compiles lmrt._core into build/dev and copies it next to the
# sources, so `PYTHONPATH=. pytest tests/` runs against this tree without pip.
# BUILD_TYPE=RelWithDebInfo keeps symbols and line tables (same -O3 code) for a debugger.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build/dev -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
  -Dpybind11_DIR="$(${PYTHON:-python3} -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(which ${PYTHON:-python3})" >/dev/null
cmake --build build/dev -j"${JOBS:-2}"
cp build/dev/_core*.so lmrt/
