// The CPU backend: the kernel thread pool, and the kernels' precision choices (backend.h).
#pragma once

#include "backend/backend.h"
#include "backend/cpu_ops.h"
#include "kernels/cpu/threadpool.h"

namespace lmrt {

class CpuBackend final : public Backend {
 public:
  // Throws std::invalid_argument when bf16 prefill asks for a tile unit this CPU (or OS, or build) lacks.
  explicit CpuBackend(const BackendOptions& options);

  cpu::ThreadPool& pool() { return pool_; }
  DeviceOps& ops() override { return ops_; }
  void host_parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) override {
    pool_.parallel_for(n, 1, fn);
  }
  int64_t late_workers() const override { return pool_.late_workers(); }
  int64_t narrow_jobs() const override { return pool_.narrow_jobs(); }

 private:
  cpu::ThreadPool pool_;
  CpuOps ops_{pool_};  // the CPU kernels over host memory, for OpsLlamaModel
};

}  // namespace lmrt
