#include "backend/backend.h"

#include <stdexcept>
#include <string>

#include "backend/cpu_backend.h"
#ifdef LMRT_HAVE_CUDA
#include "backend/cuda_backend.h"
#endif
#include "kernels/cpu/ops.h"

namespace lmrt {

CpuBackend::CpuBackend(const BackendOptions& options) : PoolBackend(options) {
  if (options.prefill_precision == PrefillPrecision::BF16 && !cpu::tile_unit_available(options.tile_unit))
    throw std::invalid_argument(std::string("bf16 prefill on the '") + cpu::tile_unit_name(options.tile_unit) +
                                "' tile unit, which this CPU (or OS, or build) lacks: use fp32 prefill");
}

#ifdef LMRT_HAVE_CUDA
CudaBackend::CudaBackend(const BackendOptions& options) : PoolBackend(options) {
  ops_ = make_cuda_ops();  // the device first
  if (options.linear_precision != LinearPrecision::FP32)
    throw std::invalid_argument("device 'cuda' runs fp32 activations (no int8 yet): use linear_precision 'fp32'");
}
#endif

std::unique_ptr<Backend> make_backend(const BackendOptions& options) {
  switch (options.device) {
    case Device::Cpu: return std::make_unique<CpuBackend>(options);
    case Device::Cuda:
#ifdef LMRT_HAVE_CUDA
      return std::make_unique<CudaBackend>(options);
#else
      throw std::invalid_argument(
          "device 'cuda': this build has no CUDA backend (nvcc was not found when it was built): rebuild with nvcc "
          "on PATH (LMRT_CUDA=ON), or use device 'cpu'");
#endif
  }
  throw std::invalid_argument("unknown device");
}

}  // namespace lmrt
