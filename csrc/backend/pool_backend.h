// A backend whose host work (the engine's sampling) runs on a CPU thread pool it owns: both backends are one (the CPU
// backend's kernels run on that pool too).
#pragma once

#include "backend/backend.h"
#include "kernels/cpu/threadpool.h"

namespace lmrt {

class PoolBackend : public Backend {
 public:
  explicit PoolBackend(const BackendOptions& options) : Backend(options), pool_(options.num_threads) {}

  cpu::ThreadPool& pool() { return pool_; }
  void host_parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) override {
    pool_.parallel_for(n, 1, fn);
  }
  int64_t late_workers() const override { return pool_.late_workers(); }
  int64_t narrow_jobs() const override { return pool_.narrow_jobs(); }

 private:
  cpu::ThreadPool pool_;
};

}  // namespace lmrt
