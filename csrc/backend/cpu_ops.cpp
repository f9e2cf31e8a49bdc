#include "backend/cpu_ops.h"

#include <cstring>
#include <stdexcept>

#include "common/sampling.h"
#include "kernels/cpu/ops.h"
#include "model/matrix_cpu.h"

namespace lmrt {

void* CpuOps::alloc(size_t bytes) {
  Buffer b(bytes ? bytes : 1);
  void* p = b.data<void>();
  owned_.emplace(p, std::move(b));
  return p;
}

void CpuOps::free(void* p) {
  if (owned_.erase(p) == 0) throw std::logic_error("CpuOps::free: not memory of this op set");
}

void CpuOps::to_device(void* dst, const void* host_src, size_t bytes) {
  if (bytes) std::memcpy(dst, host_src, bytes);
}

void CpuOps::to_host(void* host_dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(host_dst, src, bytes);
}

DeviceMatrix CpuOps::upload_matrix(const Matrix& w) {
  if (w.interleaved) throw std::invalid_argument("the op-set model takes no interleaved matrix (int8 activations)");
  DeviceMatrix d = describe(w);
  d.data = w.data.data<void>();
  d.scales = w.scales.bytes() ? w.scales.data<float>() : nullptr;
  d.mins = w.mins.bytes() ? w.mins.data<float>() : nullptr;
  return d;
}

void CpuOps::embedding(const void* table, DType dt, int64_t H, const int32_t* ids, int64_t M, float* out) {
  run([=] { cpu::embedding(table, dt, H, ids, M, out, H); });
}

void CpuOps::rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y,
                     int64_t ldy) {
  run([=] { cpu::rmsnorm(x, M, H, ldx, w, eps, y, ldy); });
}

void CpuOps::add_rmsnorm(float* x, const float* h, int64_t M, int64_t H, const float* w, float eps, float* y) {
  run([=] {
    if (h) add(x, h, M * H);
    cpu::rmsnorm(x, M, H, H, w, eps, y, H);
  });
}

void CpuOps::linear(const DeviceMatrix& w, const float* x, int64_t M, int64_t ldx, const float* bias, float* y,
                    int64_t ldy, bool bf16) {
  if (!bf16) {
    run([=] { apply_linear(pool_, *w.host, x, M, ldx, bias, y, ldy); });  // exact fp32 (no int8 scratch)
    return;
  }
  if (!unit_) throw std::logic_error("CpuOps::linear: bf16 products without a tile unit");
  cpu::TileWeights tw;
  if (w.format == WeightFormat::W4) {
    tw.w4 = cpu::W4Matrix{static_cast<const uint8_t*>(w.data), w.scales, w.mins, w.group_size};
  } else if (w.format == WeightFormat::Dense) {
    tw.dense = w.data;
    tw.dense_dtype = w.dtype;
  } else {
    throw std::logic_error("CpuOps::linear: bf16 products of an int8 matrix");
  }
  run([=] {
    cpu::linear_bf16_tiles(pool_, x, M, w.cols, ldx, tw, w.rows, bias, cpu::TileOut::Store, y, ldy, *unit_,
                           tile_scratch_);
  });
}

void CpuOps::rope(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const int32_t* pos,
                  const float* inv_freq, float attn_scale) {
  run([=] { cpu::rope(x, M, ldx, n_heads, head_dim, pos, inv_freq, attn_scale); });
}

void CpuOps::hadamard_heads(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim) {
  run([=] { cpu::hadamard_heads(x, M, ldx, n_heads, head_dim); });
}

void CpuOps::kv_store(const KVLayer& kv, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t M,
                      const int64_t* slot) {
  run([=] { cpu::kv_store(kv, k, ldk, v, ldv, M, slot); });
}

void CpuOps::kv_seal(const KVLayer& kv, const int32_t* blocks, int64_t num) {
  run([=] { pool_.parallel_for(num, 1, [&](int64_t b, int64_t e) { cpu::kv_seal(kv, blocks + b, e - b); }); });
}

void CpuOps::paged_attention(const KVLayer& kv, const float* q, int64_t ldq, float* out, int64_t ldo,
                             const int32_t* pos, const int32_t* tables, const int64_t* table_start,
                             const int64_t* host_table_start, int64_t T, int n_heads, float scale, void*) {
  (void)table_start;  // host memory here: host_table_start is the same array (read when the op runs)
  run([=] {
    seqs_.clear();
    for (int64_t t = 0; t < T;) {
      int64_t e = t + 1;
      while (e < T && host_table_start[e] == host_table_start[t]) ++e;
      seqs_.push_back(AttnSeq{q + t * ldq, ldq, out + t * ldo, ldo, tables + host_table_start[t], pos + t, e - t});
      t = e;
    }
    cpu::paged_attention(pool_, kv, seqs_.data(), static_cast<int64_t>(seqs_.size()), n_heads, scale);
  });
}

void CpuOps::silu_mul(const float* gu, int64_t M, int64_t I, int64_t ldg, float* out, int64_t ldo) {
  run([=] { cpu::silu_mul(gu, M, I, ldg, out, ldo); });
}

void CpuOps::add(float* x, const float* h, int64_t n) {
  run([=] {
    for (int64_t i = 0; i < n; ++i) x[i] += h[i];
  });
}

void CpuOps::sample(float* logits, int64_t R, int64_t V, const RowSampling* rows, const int32_t* ids, int32_t* out) {
  run([=] {
    pool_.parallel_for(R, 1, [&](int64_t b, int64_t e) {
      thread_local TokenPicker picker;
      for (int64_t r = b; r < e; ++r) out[r] = sample_row(logits + r * V, V, rows[r], ids, picker);
    });
  });
}

bool CpuOps::capture(int64_t key) {
  recording_ = true;
  key_ = key;
  tape_.clear();
  return true;
}

bool CpuOps::end_capture() {
  recording_ = false;
  graphs_[key_] = std::move(tape_);
  tape_.clear();
  replay(key_);
  return true;
}

void CpuOps::abandon_capture() {
  recording_ = false;
  tape_.clear();
}

void CpuOps::replay(int64_t key) {
  for (const std::function<void()>& op : graphs_.at(key)) op();
}

}  // namespace lmrt
