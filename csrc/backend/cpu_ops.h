// The CPU backend's op set (device_ops.h): the CPU kernels on its thread pool, over host memory. It runs the model
// the CUDA backend runs (OpsLlamaModel) on the CPU, where it must give LlamaModel's exact-fp32 bits.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "backend/device_ops.h"
#include "common/buffer.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/threadpool.h"

namespace lmrt {

class CpuOps final : public DeviceOps {
 public:
  // unit: where bf16 products run (linear(..., bf16 = true)); nullopt: this op set has none.
  CpuOps(cpu::ThreadPool& pool, std::optional<cpu::TileUnit> unit) : pool_(pool), unit_(unit) {}

  void* alloc(size_t bytes) override;  // zeroed
  void free(void* p) override;
  void to_device(void* dst, const void* host_src, size_t bytes) override;
  void to_host(void* host_dst, const void* src, size_t bytes) override;
  DeviceMatrix upload_matrix(const Matrix& w) override;  // a view of w (which must outlive it)

  void embedding(const void* table, DType dt, int64_t H, const int32_t* ids, int64_t M, float* out) override;
  void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y,
               int64_t ldy) override;
  void add_rmsnorm(float* x, const float* h, int64_t M, int64_t H, const float* w, float eps, float* y) override;
  void linear(const DeviceMatrix& w, const float* x, int64_t M, int64_t ldx, const float* bias, float* y, int64_t ldy,
              bool bf16) override;
  const char* bf16_unit() const override { return unit_ ? cpu::tile_unit_name(*unit_) : nullptr; }
  void rope(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq,
            float attn_scale) override;
  void hadamard_heads(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim) override;
  void kv_store(const KVLayer& kv, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t M,
                const int64_t* slot) override;
  void kv_seal(const KVLayer& kv, const int32_t* blocks, int64_t num) override;
  void paged_attention(const KVLayer& kv, const float* q, int64_t ldq, float* out, int64_t ldo, const int32_t* pos,
                       const int32_t* tables, const int64_t* table_start, const int64_t* host_table_start, int64_t T,
                       int n_heads, float scale, void* scratch) override;
  void silu_mul(const float* gu, int64_t M, int64_t I, int64_t ldg, float* out, int64_t ldo) override;
  void add(float* x, const float* h, int64_t n) override;
  void sample(float* logits, int64_t R, int64_t V, const RowSampling* rows, const int32_t* ids, int32_t* out) override;
  // Step graphs as the CUDA op set's, recorded as the op calls themselves (their arguments by value) and replayed
  // in order: the model's graph path (what it captures, when it records again) runs the same on any machine.
  bool capture(int64_t key) override;
  bool end_capture() override;
  void abandon_capture() override;
  void replay(int64_t key) override;

 private:
  cpu::ThreadPool& pool_;
  std::map<void*, Buffer> owned_;  // alloc's memory by address
  std::vector<AttnSeq> seqs_;      // paged_attention's sequences, rebuilt each call
  std::optional<cpu::TileUnit> unit_;
  Buffer tile_scratch_;  // the bf16 products' packed input
  // Run an op now, or append it to the recording.
  template <class F>
  void run(F&& op) {
    if (recording_)
      tape_.emplace_back(std::forward<F>(op));
    else
      op();
  }
  bool recording_ = false;
  int64_t key_ = 0;
  std::vector<std::function<void()>> tape_;                       // the recording in progress
  std::map<int64_t, std::vector<std::function<void()>>> graphs_;  // recorded steps by key
};

}  // namespace lmrt
