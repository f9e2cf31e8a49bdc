// A fixed pool of worker threads for the kernels.
//
// note: made for a shared machine. Workers block (condition variable) rather
// than spin while idle; chunks are claimed dynamically, so the caller never
// waits for a worker that has not started; and a worker descheduled mid-chunk
// (another process took its core) narrows the pool for a while, once such waits
// add up (StallDebt, threadpool.cpp).
// None of this changes results: the chunks depend on num_threads alone.
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

  // Times a worker was found descheduled mid-chunk, and jobs run narrower than
  // num_threads because of it (any thread may read these).
  int64_t late_workers() const;
  int64_t narrow_jobs() const;

 private:
  struct Impl;
  Impl* impl_;
};

// When late workers make the pool narrow (threadpool.cpp): a leaky bucket of the time the caller spent waiting on
// them. Each late wait adds its length; the debt drains at kStallShare of the wall time passed; past kStallBurst the
// pool narrows and the debt starts over. So workers that cost the caller more than a quarter of its time narrow the
// pool within a few jobs (a core taken by another process: most jobs wait milliseconds), while a pause now and then
// (a virtual CPU preempted by the host for a few hundred microseconds, a timer tick: seen ~10 times a second on a
// cloud VM) costs only itself. Times in nanoseconds, any monotonic origin.
class StallDebt {
 public:
  static constexpr double kStallShare = 0.25;
  static constexpr int64_t kStallBurstNs = 4'000'000;
  // Right after the pool tried full width again following a backoff (the core was taken a moment ago): less.
  static constexpr int64_t kProbationBurstNs = 1'000'000;
  // A late wait of waited_ns that ended at now_ns (non-decreasing); true: narrow now.
  bool late(int64_t now_ns, int64_t waited_ns, int64_t burst_ns = kStallBurstNs);

 private:
  double debt_ns_ = 0.0;
  int64_t at_ns_ = 0;
};

// check_pool: a test of the pool itself (threadpool_check.cpp).
struct PoolCheck {
  int64_t num_jobs = 0, bad_indices = 0, late_workers = 0, narrow_jobs = 0;
  int64_t held_jobs = 0;     // slow jobs in which a worker held a chunk slow_us long
  int64_t stalled_jobs = 0;  // slow jobs in which no worker claimed a chunk within 10 s
};
// Runs num_jobs parallel_for calls of varied sizes on a fresh pool; in every
// slow_every-th job (0: none) a worker is made late on purpose: the first chunk
// a worker claims sleeps slow_us while the caller runs the rest. tiny: jobs of
// 1-12 one-item chunks instead; spinners: busy threads competing for the cores
// meanwhile.
PoolCheck check_pool(int num_threads, int num_jobs, int slow_every, int slow_us, bool tiny = false, int spinners = 0);

// Physical cores of this machine (falls back to hardware_concurrency).
int physical_cores();

}  // namespace lmrt::cpu
