// The CPU backend: the kernel thread pool, and the kernels' precision choices (backend.h).
#pragma once

#include "backend/cpu_ops.h"
#include "backend/pool_backend.h"

namespace lmrt {

class CpuBackend final : public PoolBackend {
 public:
  // Throws std::invalid_argument when bf16 prefill asks for a tile unit this CPU (or OS, or build) lacks.
  explicit CpuBackend(const BackendOptions& options);

  DeviceOps& ops() override { return ops_; }

 private:
  CpuOps ops_{pool()};  // the CPU kernels over host memory, for OpsLlamaModel
};

}  // namespace lmrt
