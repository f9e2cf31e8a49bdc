#include "kernels/cpu/threadpool.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace lmrt::cpu {
namespace {

using Clock = std::chrono::steady_clock;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// How long an idle worker polls before sleeping on the condition variable.
// Short enough that a neighbour process taking the core loses little, long
// enough to catch the next op of a decode step without a futex wake-up.
constexpr auto kSpin = std::chrono::microseconds(50);
// The longest the caller spins for chunks in flight before it sleeps.
constexpr auto kMaxSpin = std::chrono::microseconds(500);

// A worker is "late" when the caller, out of chunks, waits on it for longer than
// kLateChunks of its own chunk times and at least kLateMin: it was descheduled
// mid-chunk (a scheduler time slice is ~1-4 ms; interrupts and cache misses on a
// quiet machine cost tens of microseconds).
constexpr double kLateChunks = 4.0;
constexpr auto kLateMin = std::chrono::microseconds(200);
// Late waits add to a StallDebt (threadpool.h); when it overflows the pool runs
// one thread narrower for a backoff period, then tries full width again. An
// overflow again soon after that (within kSustained) means the core is taken for
// good: the period doubles, up to kMaxBackoff, so such a core costs one overflow
// (a few ms of waiting beside a busy core: StallDebt::kProbationBurstNs) per second. An overflow is the sign of
// waits that add up, not of one pause, so the first period is long already.
// Narrowing for 20 ms on every late wait, as before, misfired on a cloud VM whose
// virtual CPUs pause for 0.2-2.5 ms ~10 times a second: that and the late wait
// that followed each period kept the pool one thread wide most of the time (a
// 32-request decode at 633-788 tokens/s on ~1.2 cores, 917-1,009 at full width;
// 2026-12-03).
constexpr auto kMinBackoff = std::chrono::milliseconds(200);
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);
constexpr auto kSustained = std::chrono::milliseconds(200);

// Polls pred for at most `spin`; true if it became true.
template <typename Pred>
bool spin_until(Pred pred, Clock::duration spin = kSpin) {
  const auto deadline = Clock::now() + spin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      cpu_relax();
    }
    if (Clock::now() >= deadline) return pred();
  }
}

}  // namespace

// The job protocol. The caller publishes a job (fn, total, chunk), then the
// ticket (job id, chunk count, next chunk: one 64-bit word), then wakes the
// workers. Anyone (caller included) claims chunk i by a CAS of the ticket from
// (job, count, i) to (job, count, i + 1), only while i < count; a worker that
// wakes late sees another job id (or no chunk left) and claims nothing. The
// caller waits only for chunks that were claimed, never for a worker that has
// not shown up: a descheduled worker costs nothing unless it holds a chunk.
// A claim succeeds only while its job has an unclaimed chunk, so the job is
// unfinished and the caller has not yet rewritten the job fields: a successful
// claim always sees its own job's fields.
//
// note: the count lives in the ticket word on purpose. With the count in a field
// of its own, a worker holding a spent ticket (job A, all 7 chunks claimed) could
// read job B's larger count while the caller was still writing B's fields, pass
// the bounds test, and win its CAS on A's ticket before B's was published: it
// then ran a chunk with half-written fields and counted it into B's `done`, so
// B never finished (a hang) or a chunk ran with a stale fn (a crash or wrong
// numbers). The engine tests on a 16-core host hung 3 times in ~20 runs and once
// sampled a wrong token; tests/test_threadpool.py reproduces the race here.
struct ThreadPool::Impl {
  using Fn = std::function<void(int64_t, int64_t)>;

  int num_threads;
  std::vector<std::thread> workers;

  std::mutex mu;
  std::condition_variable cv_work;  // workers wait here for a new job
  std::condition_variable cv_done;  // the caller waits here for the last chunk
  std::atomic<uint32_t> job{0};     // id of the newest job (wakes the workers)
  std::atomic<bool> stop{false};

  // The current job; written by the caller before its ticket is published.
  std::atomic<const Fn*> fn{nullptr};
  std::atomic<int64_t> total{0};
  std::atomic<int64_t> chunk{1};
  std::atomic<int> active{1};         // threads (caller included) allowed to claim chunks
  std::atomic<uint64_t> ticket{0};    // job id << 32 | chunk count << 16 | next unclaimed chunk
  std::atomic<uint32_t> done{0};      // chunks finished in the current job
  std::atomic<int64_t> last_done{0};  // when the job's last chunk finished (steady_clock ticks)
  std::atomic<bool> caller_asleep{false};
  std::atomic<bool> failed{false};
  std::mutex err_mu;
  std::exception_ptr err;

  // Caller-side state (only the calling thread touches these).
  Clock::time_point backoff_until{};
  Clock::duration backoff{kMinBackoff};
  StallDebt stalls;
  std::atomic<int64_t> late_workers{0};  // read by stats() from other threads
  std::atomic<int64_t> narrow_jobs{0};
  int width = 0;  // threads used for jobs now: num_threads, less after a late worker

  // Claims and runs chunks of job `id` until none is left; returns the number run.
  int run_chunks(uint32_t id) {
    int ran = 0;
    uint64_t t = ticket.load(std::memory_order_acquire);
    for (;;) {
      if (static_cast<uint32_t>(t >> 32) != id) return ran;
      const uint32_t i = static_cast<uint32_t>(t & 0xffff), n = static_cast<uint32_t>((t >> 16) & 0xffff);
      if (i >= n) return ran;
      if (!ticket.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      const int64_t c = chunk.load(std::memory_order_relaxed);
      const int64_t b = i * c, e = std::min(total.load(std::memory_order_relaxed), b + c);
      if (!failed.load(std::memory_order_relaxed)) {
        try {
          (*fn.load(std::memory_order_relaxed))(b, e);
        } catch (...) {
          std::lock_guard<std::mutex> lk(err_mu);
          if (!err) err = std::current_exception();
          failed.store(true, std::memory_order_relaxed);
        }
      }
      ++ran;
      // seq_cst pairs with the caller's store of caller_asleep then load of done: one of us sees the other.
      if (done.load(std::memory_order_relaxed) + 1 == n)  // about to finish the job: stamp it first
        last_done.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
      if (done.fetch_add(1) + 1 == n && caller_asleep.load()) {
        std::lock_guard<std::mutex> lk(mu);
        cv_done.notify_one();
      }
      t = ticket.load(std::memory_order_acquire);
    }
  }

  void worker_loop(int index) {
    uint32_t seen = 0;
    for (;;) {
      auto ready = [&] { return stop.load(std::memory_order_acquire) || job.load(std::memory_order_acquire) != seen; };
      if (!spin_until(ready)) {
        std::unique_lock<std::mutex> lk(mu);
        cv_work.wait(lk, ready);
      }
      if (stop.load(std::memory_order_acquire)) return;
      seen = job.load(std::memory_order_acquire);
      // Workers beyond the current width sit this job out (index 0 is the caller).
      if (index < active.load(std::memory_order_relaxed)) run_chunks(seen);
    }
  }
};

bool StallDebt::late(int64_t now_ns, int64_t waited_ns, int64_t burst_ns) {
  const double drained = kStallShare * static_cast<double>(now_ns - at_ns_);
  debt_ns_ = std::max(0.0, debt_ns_ - drained) + static_cast<double>(waited_ns);
  at_ns_ = now_ns;
  if (debt_ns_ <= static_cast<double>(burst_ns)) return false;
  debt_ns_ = 0.0;
  return true;
}

ThreadPool::ThreadPool(int num_threads) : impl_(new Impl) {
  impl_->num_threads = std::max(1, num_threads);
  impl_->width = impl_->num_threads;
  for (int i = 1; i < impl_->num_threads; ++i) impl_->workers.emplace_back([this, i] { impl_->worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stop.store(true, std::memory_order_release);
  }
  impl_->cv_work.notify_all();
  for (auto& t : impl_->workers) t.join();
  delete impl_;
}

int ThreadPool::num_threads() const { return impl_->num_threads; }
int64_t ThreadPool::late_workers() const { return impl_->late_workers.load(std::memory_order_relaxed); }
int64_t ThreadPool::narrow_jobs() const { return impl_->narrow_jobs.load(std::memory_order_relaxed); }

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  Impl& s = *impl_;
  // At most ~16 chunks per thread: enough to balance (a product of 18 strips on 2 threads runs as 18 chunks of one,
  // 9 each, where 8 per thread made 9 chunks of two: 10 strips against 8), few enough that the shared ticket stays
  // cheap when the caller passes a tiny grain. Chunking depends on num_threads only (not on the width now in use),
  // so results never depend on contention.
  // (The ticket holds at most 65535 chunks.)
  constexpr int64_t kChunksPerThread = 16;
  const int64_t most = kChunksPerThread * s.num_threads;
  const int64_t chunk = std::max({std::max<int64_t>(grain, 1), (n + most - 1) / most, (n + 65534) / 65535});
  // Back to full width once the backoff period is over.
  if (s.width < s.num_threads && Clock::now() >= s.backoff_until) ++s.width;
  if (s.width < s.num_threads) s.narrow_jobs.fetch_add(1, std::memory_order_relaxed);
  if (s.width == 1 || n <= chunk) {
    fn(0, n);
    return;
  }
  const uint32_t id = s.job.load(std::memory_order_relaxed) + 1;
  const uint32_t num_chunks = static_cast<uint32_t>((n + chunk - 1) / chunk);
  s.fn.store(&fn, std::memory_order_relaxed);
  s.total.store(n, std::memory_order_relaxed);
  s.chunk.store(chunk, std::memory_order_relaxed);
  s.active.store(s.width, std::memory_order_relaxed);
  s.done.store(0, std::memory_order_relaxed);
  s.failed.store(false, std::memory_order_relaxed);
  s.ticket.store(static_cast<uint64_t>(id) << 32 | static_cast<uint64_t>(num_chunks) << 16, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lk(s.mu);
    s.job.store(id, std::memory_order_release);
  }
  s.cv_work.notify_all();

  const auto t0 = Clock::now();
  const int mine = s.run_chunks(id);
  auto finished = [&] { return s.done.load() == num_chunks; };
  if (!finished()) {
    // Out of chunks; the rest are in flight on workers. Spin for about two of
    // our chunk times (bounded: a spinning caller may hold the core a
    // descheduled worker needs), then sleep. The last chunk finishing far
    // later than our own chunks take means a worker was descheduled mid-chunk;
    // it is timed by the worker's stamp, so our own wake-up latency is no sign.
    const auto t1 = Clock::now();
    const auto per_chunk = mine > 0 ? (t1 - t0) / mine : Clock::duration::zero();
    const auto spin = std::clamp<Clock::duration>(2 * per_chunk, kSpin, kMaxSpin);
    if (!spin_until(finished, spin)) {
      std::unique_lock<std::mutex> lk(s.mu);
      s.caller_asleep.store(true);
      s.cv_done.wait(lk, finished);
      s.caller_asleep.store(false, std::memory_order_relaxed);
    }
    const auto waited = Clock::duration(s.last_done.load(std::memory_order_relaxed)) - t1.time_since_epoch();
    const auto late =
        std::max<Clock::duration>(kLateMin, std::chrono::duration_cast<Clock::duration>(per_chunk * kLateChunks));
    if (waited > late) {
      const auto now = Clock::now();
      s.late_workers.fetch_add(1, std::memory_order_relaxed);
      const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
      // Within kSustained of a backoff's end a smaller debt narrows again: beside a busy core the first waits
      // (1-3 ms each) do it, instead of ~15 ms of them at full width per probe.
      const bool probation = now - s.backoff_until <= kSustained;
      const int64_t burst = probation ? StallDebt::kProbationBurstNs : StallDebt::kStallBurstNs;
      if (s.stalls.late(now_ns, std::chrono::duration_cast<std::chrono::nanoseconds>(waited).count(), burst)) {
        s.backoff = now - s.backoff_until > kSustained ? Clock::duration(kMinBackoff)
                                                       : std::min<Clock::duration>(2 * s.backoff, kMaxBackoff);
        s.backoff_until = now + s.backoff;
        if (s.width > 1) --s.width;
      }
    }
  }
  if (s.failed.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lk(s.err_mu);
    std::rethrow_exception(std::exchange(s.err, nullptr));
  }
}

namespace {

// Reads one integer from a small sysfs/procfs file; -1 when absent.
int read_int_file(const char* path) {
  FILE* f = std::fopen(path, "r");
  if (!f) return -1;
  int v = -1;
  if (std::fscanf(f, "%d", &v) != 1) v = -1;
  std::fclose(f);
  return v;
}

int count_physical_cores() {
  // Distinct (package, core) pairs of the online CPUs; SMT siblings share one.
  const long num_cpus = sysconf(_SC_NPROCESSORS_CONF);
  std::vector<std::pair<int, int>> cores;
  for (long cpu = 0; cpu < num_cpus && cpu < 65536; ++cpu) {
    char path[128];
    std::snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%ld/topology/physical_package_id", cpu);
    const int pkg = read_int_file(path);
    std::snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%ld/topology/core_id", cpu);
    const int core = read_int_file(path);
    if (pkg < 0 || core < 0) continue;  // offline CPUs have no topology/
    const std::pair<int, int> id(pkg, core);
    if (std::find(cores.begin(), cores.end(), id) == cores.end()) cores.push_back(id);
  }
  if (!cores.empty()) return static_cast<int>(cores.size());
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<int>(online) : 1;
}

}  // namespace

int physical_cores() {
  static const int n = count_physical_cores();
  return n;
}

}  // namespace lmrt::cpu
