// A fixed pool of worker threads for the kernels.
//
// note: workers block (condition variable) rather than spin while idle, so a
// busy neighbour process cannot starve a step waiting at a barrier.
#pragma once

#include <cstdint>
#include <functional>

namespace lmrt::cpu {

class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 means everything runs inline.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const;
  // Calls fn(begin, end) on disjoint chunks covering [0, n); returns when all are done.
  // The calling thread takes a share. Chunks are at least `grain` long (except the last).
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  struct Impl;
  Impl* impl_;
};

// Physical cores of this machine (falls back to hardware_concurrency).
int physical_cores();

}  // namespace lmrt::cpu
