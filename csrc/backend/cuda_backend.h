// The CUDA backend: its op set (the CUDA kernels on one stream, backend/cuda_ops.h) for the model, and a host
// thread pool for the engine's host work (sampling). Only in a build with the CUDA backend (LMRT_HAVE_CUDA).
#pragma once

#include <memory>

#include "backend/cuda_ops.h"
#include "backend/pool_backend.h"

namespace lmrt {

class CudaBackend final : public PoolBackend {
 public:
  // Throws std::invalid_argument naming what is missing (no device; a CPU precision mode asked of the GPU).
  explicit CudaBackend(const BackendOptions& options);

  DeviceOps& ops() override { return *ops_; }

 private:
  std::unique_ptr<DeviceOps> ops_;
};

}  // namespace lmrt
