// A self-check of ThreadPool for the tests: many jobs of varied sizes, some
// chunks made slow on purpose (a worker descheduled mid-chunk, on demand), and
// a count of indices not visited exactly once.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "kernels/cpu/threadpool.h"

namespace lmrt::cpu {

PoolCheck check_pool(int num_threads, int num_jobs, int slow_every, int slow_us) {
  ThreadPool pool(num_threads);
  PoolCheck r;
  std::vector<std::atomic<int>> hits(4096);
  for (int job = 0; job < num_jobs; ++job) {
    const int64_t n = 1 + (job * 7919) % 4096;  // 1 .. 4096, spread
    const int64_t grain = 1 + job % 5;
    for (int64_t i = 0; i < n; ++i) hits[i].store(0, std::memory_order_relaxed);
    const bool slow = slow_every > 0 && job % slow_every == 0;
    pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
      // The job's last chunk is claimed by whichever thread gets there: half the time a worker.
      if (slow && e == n) std::this_thread::sleep_for(std::chrono::microseconds(slow_us));
    });
    for (int64_t i = 0; i < n; ++i) r.bad_indices += hits[i].load(std::memory_order_relaxed) != 1;
    r.num_jobs += 1;
  }
  r.late_workers = pool.late_workers();
  r.narrow_jobs = pool.narrow_jobs();
  return r;
}

}  // namespace lmrt::cpu
