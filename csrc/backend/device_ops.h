// The op set a backend offers a model that runs on its device (OpsLlamaModel, model/llama_ops.h): memory on the
// device, copies to and from the host, and the exact-fp32 ops of a Llama layer over device pointers. The CUDA
// backend's ops are the kernels of csrc/kernels/cuda/ on its stream; the CPU backend's are the CPU kernels on its
// thread pool, over host memory, so the model that the CUDA backend runs is checked bit for bit against LlamaModel
// on any machine (tests/test_ops_model.py). Every op keeps its kernel's contract (kernels/cpu/ops.h,
// kernels/cuda/ops.h); pointers are the device's, except where a comment says host.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ops.h"
#include "model/matrix.h"

namespace lmrt {

// A weight matrix as the device holds it (DeviceOps::upload_matrix): dense of dtype (F32 or BF16), or 4-bit rows
// (W4Matrix's layout, not interleaved).
struct DeviceMatrix {
  WeightFormat format = WeightFormat::Dense;
  DType dtype = DType::F32;
  int group_size = 0;
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;     // Dense [rows, cols] of dtype; W4 codes [rows, cols / 2]
  const float* scales = nullptr;  // W4 [rows, cols / group_size]
  const float* mins = nullptr;    // W4 [rows, cols / group_size]
  const Matrix* host = nullptr;   // the matrix it was made from (the CPU op set runs apply_linear on it)
};

// w's format and shape, and w itself as `host` (an op set's upload_matrix then sets the device pointers).
inline DeviceMatrix describe(const Matrix& w) {
  DeviceMatrix d;
  d.format = w.format;
  d.dtype = w.dtype;
  d.group_size = w.group_size;
  d.rows = w.rows;
  d.cols = w.cols;
  d.host = &w;
  return d;
}

class DeviceOps {
 public:
  virtual ~DeviceOps() = default;

  // Memory: alloc gives bytes on the device (never null; std::runtime_error when there is none), free returns them.
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* p) = 0;
  virtual void to_device(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void to_host(void* host_dst, const void* src, size_t bytes) = 0;  // waits for the ops before it
  // A host matrix's copy on the device (freed with the op set); std::invalid_argument for a format it cannot run.
  virtual DeviceMatrix upload_matrix(const Matrix& w) = 0;

  // The ops, in the order a layer runs them.
  virtual void embedding(const void* table, DType dt, int64_t H, const int32_t* ids, int64_t M, float* out) = 0;
  virtual void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y,
                       int64_t ldy) = 0;
  // The residual add, then the norm: x += h (h may be null; h == y allowed), y = rmsnorm(x); [M, H] contiguous.
  virtual void add_rmsnorm(float* x, const float* h, int64_t M, int64_t H, const float* w, float eps, float* y) = 0;
  // y [M, w.rows] (row stride ldy) = x [M, w.cols] (row stride ldx) W^T (+ bias [w.rows]). bf16: on the device's
  // bf16 matrix unit (the GPU's tensor cores, the CPU's tile unit), x and W rounded to bf16, fp32 sums; else exact
  // fp32. bf16 only where bf16_unit().
  virtual void linear(const DeviceMatrix& w, const float* x, int64_t M, int64_t ldx, const float* bias, float* y,
                      int64_t ldy, bool bf16) = 0;
  // The unit bf16 products run on, for info ("tensor cores", "amx", "avx512bf16", "model"); nullptr: none.
  virtual const char* bf16_unit() const = 0;
  virtual void rope(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const int32_t* pos,
                    const float* inv_freq, float attn_scale) = 0;
  virtual void hadamard_heads(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim) = 0;
  virtual void kv_store(const KVLayer& kv, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t M,
                        const int64_t* slot) = 0;
  // T query rows; row t's block table at tables + table_start[t]. The rows of one sequence are consecutive and
  // share their table_start (the CPU op set groups them back into sequences from host_table_start).
  // scratch: attention_scratch_bytes(T, n_heads, head_dim) bytes of device memory (split-KV's partial softmaxes).
  // I4Channel K: quantizes the full blocks `blocks` [num] (device memory) from their staged rows (cpu::kv_seal).
  virtual void kv_seal(const KVLayer& kv, const int32_t* blocks, int64_t num) = 0;
  virtual void paged_attention(const KVLayer& kv, const float* q, int64_t ldq, float* out, int64_t ldo,
                               const int32_t* pos, const int32_t* tables, const int64_t* table_start,
                               const int64_t* host_table_start, int64_t T, int n_heads, float scale, void* scratch) = 0;
  virtual size_t attention_scratch_bytes(int64_t /*T*/, int /*n_heads*/, int /*head_dim*/) const { return 0; }
  virtual void silu_mul(const float* gu, int64_t M, int64_t I, int64_t ldg, float* out, int64_t ldo) = 0;
  // x[i] += h[i], i < n
  virtual void add(float* x, const float* h, int64_t n) = 0;
  // Step graphs (the CUDA op set's; the CPU op set has none: capture() returns false and runs nothing): capture(key)
  // starts recording the ops issued after it instead of running them; end_capture() keeps them as graph `key`
  // (replacing an older one) and runs it once, or returns false where the device refused the recording (then
  // nothing ran); abandon_capture() drops a recording cut short (an op threw); replay(key) runs graph `key` again,
  // over the same device addresses and host arguments it was recorded with.
  virtual bool capture(int64_t /*key*/) { return false; }
  virtual bool end_capture() { return false; }
  virtual void abandon_capture() {}
  virtual void replay(int64_t /*key*/) {}
  // out[r] = row r's token under rows[r] (common/sampling.h's sample_row: -1 where a logit is NaN or +inf; else the
  // penalty and bans, then greedy or the draw at rows[r].u after temperature, top-k, top-p and min-p), logits
  // [R, V] changed in place (what is left of them is the op's own); rows [R] and ids (the rows' token lists) in
  // device memory: sampling where the logits are, so only token ids cross to the host.
  virtual void sample(float* logits, int64_t R, int64_t V, const RowSampling* rows, const int32_t* ids,
                      int32_t* out) = 0;
};

// Device memory that grows to the largest size asked of it (reserve) and is freed with it.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(DeviceOps& ops) : ops_(&ops) {}
  ~DeviceBuffer() { release(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ops_(o.ops_), p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ops_ = o.ops_;
      p_ = o.p_;
      bytes_ = o.bytes_;
      o.p_ = nullptr;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // At least `bytes` (contents not kept when it grows).
  void reserve(size_t bytes) {
    if (p_ && bytes <= bytes_) return;
    release();
    p_ = ops_->alloc(bytes);
    bytes_ = bytes;
  }
  template <typename T>
  T* data() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return p_ ? bytes_ : 0; }

 private:
  // Also from the destructor and the moves, so it never throws: a free that fails (a kernel's fault is sticky, and
  // the step that met it has reported it) must not end the process.
  void release() noexcept {
    if (!p_) return;
    try {
      ops_->free(p_);
    } catch (...) {  // the fault was reported by the step that met it
    }
    p_ = nullptr;
  }
  DeviceOps* ops_ = nullptr;
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace lmrt
