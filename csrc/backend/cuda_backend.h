// The CUDA backend: its op set (the CUDA kernels on one stream, backend/cuda_ops.h) for the model, and a host
// thread pool for the engine's host work (sampling). Only in a build with the CUDA backend (LMRT_HAVE_CUDA).
#pragma once

#include <memory>

#include "backend/backend.h"
#include "backend/cuda_ops.h"
#include "kernels/cpu/threadpool.h"

namespace lmrt {

class CudaBackend final : public Backend {
 public:
  // Throws std::invalid_argument naming what is missing (no device; a CPU precision mode asked of the GPU).
  explicit CudaBackend(const BackendOptions& options);

  DeviceOps& ops() override { return *ops_; }
  void host_parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) override {
    pool_.parallel_for(n, 1, fn);
  }
  int64_t late_workers() const override { return pool_.late_workers(); }
  int64_t narrow_jobs() const override { return pool_.narrow_jobs(); }

 private:
  cpu::ThreadPool pool_;
  std::unique_ptr<DeviceOps> ops_;
};

}  // namespace lmrt
