// A self-check of ThreadPool for the tests: many jobs of varied sizes, some
// chunks made slow on purpose (a worker descheduled mid-chunk, on demand), and
// a count of indices not visited exactly once.
//
// tiny: jobs of 1-12 one-item chunks, as a decode step of a small model makes
// them, back to back; spinners: threads of our own that take the cores meanwhile
// (spin, then yield), so workers are preempted at arbitrary points. Together they
// expose races between a job's end and the next job's start (threadpool.cpp).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "kernels/cpu/threadpool.h"

namespace lmrt::cpu {

PoolCheck check_pool(int num_threads, int num_jobs, int slow_every, int slow_us, bool tiny, int spinners) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> spin;
  for (int i = 0; i < spinners; ++i)
    spin.emplace_back([&stop] {
      while (!stop.load(std::memory_order_relaxed)) {
        for (volatile int k = 0; k < 100000; k = k + 1) {
        }
        std::this_thread::yield();
      }
    });
  ThreadPool pool(num_threads);
  PoolCheck r;
  std::vector<std::atomic<int>> hits(4096);
  uint32_t rng = 12345;
  for (int job = 0; job < num_jobs; ++job) {
    rng = rng * 1664525u + 1013904223u;
    const int64_t n = tiny ? 1 + (rng >> 16) % 12 : 1 + (job * 7919) % 4096;  // tiny: 1 .. 12, else 1 .. 4096
    const int64_t grain = tiny ? 1 : 1 + job % 5;
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
  stop.store(true);
  for (auto& t : spin) t.join();
  return r;
}

}  // namespace lmrt::cpu
