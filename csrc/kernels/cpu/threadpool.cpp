#include "kernels/cpu/threadpool.h"

#include <unistd.h>

#include <cstdio>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace lmrt::cpu {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// How long an idle worker polls before sleeping on the condition variable.
// Short enough that a neighbour process taking the core loses little, long
// enough to catch the next op of a decode step without a futex wake-up.
constexpr auto kSpin = std::chrono::microseconds(50);

// Polls pred for at most kSpin; true if it became true.
template <typename Pred>
bool spin_until(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return pred();
  }
}

}  // namespace

struct ThreadPool::Impl {
  int num_threads;
  std::vector<std::thread> workers;

  std::mutex mu;
  std::condition_variable cv_work;  // workers wait here for a new generation
  std::condition_variable cv_done;  // the caller waits here for pending == 0
  std::atomic<uint64_t> generation{0};
  std::atomic<bool> stop{false};

  // The current job; written by the caller before generation is bumped.
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t total = 0;
  int64_t chunk = 1;
  std::atomic<int64_t> next{0};
  std::atomic<int> pending{0};  // workers still inside the current job
  std::mutex err_mu;
  std::exception_ptr err;

  // Chunks are handed out dynamically: attention items differ a lot in cost
  // (causal), and a neighbour process may slow one core down.
  void run_chunks() {
    for (;;) {
      const int64_t b = next.fetch_add(chunk, std::memory_order_relaxed);
      if (b >= total) return;
      const int64_t e = std::min(total, b + chunk);
      try {
        (*fn)(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lk(err_mu);
        if (!err) err = std::current_exception();
        next.store(total, std::memory_order_relaxed);
      }
    }
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      auto ready = [&] {
        return stop.load(std::memory_order_acquire) ||
               generation.load(std::memory_order_acquire) != seen;
      };
      if (!spin_until(ready)) {
        std::unique_lock<std::mutex> lk(mu);
        cv_work.wait(lk, ready);
      }
      if (stop.load(std::memory_order_acquire)) return;
      seen = generation.load(std::memory_order_acquire);
      run_chunks();
      if (pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(mu);
        cv_done.notify_one();
      }
    }
  }
};

ThreadPool::ThreadPool(int num_threads) : impl_(new Impl) {
  impl_->num_threads = std::max(1, num_threads);
  for (int i = 1; i < impl_->num_threads; ++i)
    impl_->workers.emplace_back([this] { impl_->worker_loop(); });
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

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  Impl& s = *impl_;
  // At most ~8 chunks per thread: enough to balance, few enough that the shared
  // counter stays cheap when the caller passes a tiny grain.
  const int64_t chunk =
      std::max<int64_t>(std::max<int64_t>(grain, 1), (n + 8 * s.num_threads - 1) / (8 * s.num_threads));
  if (s.num_threads == 1 || n <= chunk) {
    fn(0, n);
    return;
  }
  s.fn = &fn;
  s.total = n;
  s.chunk = chunk;
  s.err = nullptr;
  s.next.store(0, std::memory_order_relaxed);
  s.pending.store(s.num_threads - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(s.mu);
    s.generation.fetch_add(1, std::memory_order_release);
  }
  s.cv_work.notify_all();
  s.run_chunks();
  auto done = [&] { return s.pending.load(std::memory_order_acquire) == 0; };
  if (!spin_until(done)) {
    std::unique_lock<std::mutex> lk(s.mu);
    s.cv_done.wait(lk, done);
  }
  s.fn = nullptr;
  if (s.err) std::rethrow_exception(std::exchange(s.err, nullptr));
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
