#include "backend/backend.h"

#include <stdexcept>
#include <string>

#include "backend/cpu_backend.h"
#include "kernels/cpu/ops.h"

namespace lmrt {

CpuBackend::CpuBackend(const BackendOptions& options) : Backend(options), pool_(options.num_threads) {
  if (options.prefill_precision == PrefillPrecision::BF16 && !cpu::tile_unit_available(options.tile_unit))
    throw std::invalid_argument(std::string("bf16 prefill on the '") + cpu::tile_unit_name(options.tile_unit) +
                                "' tile unit, which this CPU (or OS, or build) lacks: use fp32 prefill");
}

std::unique_ptr<Backend> make_backend(const BackendOptions& options) {
  switch (options.device) {
    case Device::Cpu: return std::make_unique<CpuBackend>(options);
    case Device::Cuda:
      throw std::invalid_argument(
          "device 'cuda': the engine does not run on the CUDA backend yet (only its first ops are built); use "
          "device 'cpu'");
  }
  throw std::invalid_argument("unknown device");
}

}  // namespace lmrt
