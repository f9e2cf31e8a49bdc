// A self-check of ThreadPool for the tests: many jobs of varied sizes, some
// with a worker made late on purpose, and a count of indices not visited
// exactly once.
//
// slow jobs force the condition the pool must detect, whatever the scheduler
// does: the first chunk a worker (not the caller) claims sleeps slow_us, and
// the caller's own first chunk waits until a worker holds one, so a worker
// always holds a late chunk while the caller runs out of work. A slow job is
// 4096 items in single-item grains (>= 16 chunks per thread count here), so
// the caller's wait for the worker is spread over many of its own chunks and
// does not hide the late one (the pool judges lateness against the caller's
// average chunk time).
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
namespace {

// The caller gives up waiting for a worker after this long (a stalled pool
// fails the check instead of hanging it).
constexpr auto kWorkerDeadline = std::chrono::seconds(10);

}  // namespace

PoolCheck check_pool(int num_threads, int num_jobs, int slow_every, int slow_us, bool tiny, int spinners) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> spin;
  for (int i = 0; i < spinners; ++i)
    spin.emplace_back([&stop] {
      while (!stop.load(std::memory_order_relaxed)) {
        for (volatile int k = 0; k < 100000; k = k + 1) {}
        std::this_thread::yield();
      }
    });
  ThreadPool pool(num_threads);
  PoolCheck r;
  std::vector<std::atomic<int>> hits(4096);
  const auto caller = std::this_thread::get_id();
  uint32_t rng = 12345;
  for (int job = 0; job < num_jobs; ++job) {
    rng = rng * 1664525u + 1013904223u;
    const bool slow = slow_every > 0 && job % slow_every == 0;
    // tiny: 1 .. 12 items, slow: 4096, else 1 .. 4096
    const int64_t n = slow ? 4096 : tiny ? 1 + (rng >> 16) % 12 : 1 + (job * 7919) % 4096;
    const int64_t grain = slow || tiny ? 1 : 1 + job % 5;
    for (int64_t i = 0; i < n; ++i) hits[i].store(0, std::memory_order_relaxed);
    std::atomic<bool> worker_holds{false};
    std::atomic<bool> stalled{false};
    pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
      // A job run whole on the caller (the pool narrowed to one thread) has no worker to make late.
      if (slow && !(b == 0 && e == n)) {
        if (std::this_thread::get_id() != caller) {
          if (!worker_holds.exchange(true)) std::this_thread::sleep_for(std::chrono::microseconds(slow_us));
        } else {
          const auto deadline = std::chrono::steady_clock::now() + kWorkerDeadline;
          while (!worker_holds.load() && !stalled.load()) {
            if (std::chrono::steady_clock::now() > deadline) stalled.store(true);
            std::this_thread::yield();
          }
        }
      }
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
    });
    for (int64_t i = 0; i < n; ++i) r.bad_indices += hits[i].load(std::memory_order_relaxed) != 1;
    r.held_jobs += worker_holds.load();
    r.stalled_jobs += stalled.load();
    r.num_jobs += 1;
  }
  r.late_workers = pool.late_workers();
  r.narrow_jobs = pool.narrow_jobs();
  stop.store(true);
  for (auto& t : spin) t.join();
  return r;
}

}  // namespace lmrt::cpu
