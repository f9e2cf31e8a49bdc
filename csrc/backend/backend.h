// Where a model's ops run, and who owns what they need. The CPU backend owns the kernel thread pool and the
// precision choices of its kernels (bf16 tiles for prompt chunks, int8 activations); a CUDA backend is to own its
// stream, allocator and workspaces the same way. The engine makes one, hands it to the model and uses it for its
// own host work (sampling); it sees nothing of the kernels behind it (no csrc/kernels/cpu include in csrc/engine/).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "backend/device_ops.h"
#include "kernels/ops.h"

namespace lmrt {

enum class Device { Cpu, Cuda };
// How steps of many rows run: exact fp32 everywhere, or bf16 on a tile unit for steps of 16+ rows (CPU: prompt
// chunks, and decode steps of 16+ requests).
enum class PrefillPrecision { FP32, BF16 };
// The 4-bit products off the tiles: exact fp32, or int8 activations (cpu::linear_w4a8).
enum class LinearPrecision { FP32, Int8 };

struct BackendOptions {
  Device device = Device::Cpu;
  int num_threads = 0;  // kernel threads, the calling (engine loop) thread included
  PrefillPrecision prefill_precision = PrefillPrecision::FP32;
  TileUnit tile_unit = TileUnit::Model;  // runs bf16 prefill (checked available)
  LinearPrecision linear_precision = LinearPrecision::FP32;
  bool step_graphs = false;  // decode steps replayed as recorded graphs where the op set records them (CUDA)
};

class Backend {
 public:
  explicit Backend(const BackendOptions& options) : options_(options) {}
  virtual ~Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  const BackendOptions& options() const { return options_; }
  Device device() const { return options_.device; }
  // The op set a model that runs on this backend's device calls (OpsLlamaModel).
  virtual DeviceOps& ops() = 0;
  // Host work spread over the backend's CPU threads (the engine's per-request sampling): fn(begin, end) on
  // disjoint chunks covering [0, n); returns when all are done.
  virtual void host_parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) = 0;
  // Contention its threads met: workers found descheduled mid-chunk, and jobs run narrower because of it.
  virtual int64_t late_workers() const = 0;
  virtual int64_t narrow_jobs() const = 0;

 private:
  BackendOptions options_;
};

// The backend for options.device; std::invalid_argument naming what this build or machine lacks (a CUDA backend or
// device, a bf16 tile unit the CPU does not have).
std::unique_ptr<Backend> make_backend(const BackendOptions& options);

}  // namespace lmrt
