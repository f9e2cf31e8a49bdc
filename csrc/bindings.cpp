// The only pybind11 file: C++ meets Python here and nowhere else. No logic lives here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/ops.h"

namespace py = pybind11;

// ---- kernels: thin wrappers over csrc/kernels/cpu/ops.h, used by tests/test_kernels.py ----
static void bind_kernels(py::module_& m) {
  // (kernel bindings go here)
}

// ---- engine: model, KV cache, scheduler, sampler behind one Engine object ----
static void bind_engine(py::module_& m) {
  // (engine bindings go here)
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "lmrt C++ core";
  py::module_ k = m.def_submodule("kernels", "CPU kernels (for tests and benchmarks)");
  bind_kernels(k);
  bind_engine(m);
}
