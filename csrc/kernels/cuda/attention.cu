// Paged attention on the GPU (ops.h states the contract; cpu/attention.cpp's scalar kernel is the reference): one warp
// per (row, query head), the cache read in position order with an online softmax, quantized rows widened in registers
// (x = code * scale + offset, as the CPU forms it; int4 K per channel: a block's codes with its channels' scales once
// the query sees the whole block, else the block's staged int8 rows, as cpu::kv_reads_sealed says). A row that sees
// more than kAttnSplitKeys positions splits them over up to kAttnSplits warps (equal runs of at least kAttnSplitKeys),
// each leaving its running max, denominator and sums in the scratch, which a second kernel combines; a shorter row runs
// in one warp, as it did before the split. Which a row takes depends on its own position only, so a row's result does
// not depend on the rows beside it. Several heads of a KV group per warp and the prompt's flash-attention tiles come
// next.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>

#include "kernels/cuda/kv_quant.cuh"
#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

constexpr int kMaxDimsPerLane = 8;  // head_dim <= 256

// Dim i of cache row `row` as fp32.
struct RowReader {
  const void* cache;
  const uint16_t* scales;
  const uint8_t* zeros;
  KVDType dt;
  int hd;
  __device__ float operator()(int64_t row, int i, float s, float m) const {
    switch (dt) {
      case KVDType::F32: return static_cast<const float*>(cache)[row * hd + i];
      case KVDType::BF16:
        return __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(cache)[row * hd + i]) << 16);
      case KVDType::I8: return fmaf(static_cast<float>(static_cast<const uint8_t*>(cache)[row * hd + i]), s, m);
      default: {  // I4: byte j of each run of 32 dims holds dim j (low nibble) and j + 16 (high)
        const uint8_t b = static_cast<const uint8_t*>(cache)[row * (hd / 2) + i / 32 * 16 + i % 16];
        return fmaf(static_cast<float>(i % 32 < 16 ? b & 0x0f : b >> 4), s, m);
      }
    }
  }
  __device__ void params(int64_t row, float* s, float* m) const {
    if (dt == KVDType::I8 || dt == KVDType::I4) {
      *s = f16_bits_to_f32(scales[row]);
      *m = -static_cast<float>(zeros[row]) * *s;
    } else {
      *s = *m = 0.0f;
    }
  }
};

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The online softmax over positions [j0, j1) of row t's sequence for one query head: the running max, the
// denominator and this lane's dims of the weighted sum of V.
struct Partial {
  float run_max, denom, acc[kMaxDimsPerLane];
};

// Lane `lane`'s part of q . k_j for an I4Channel K: the block's int4 codes and per-channel (scale, zero) when the
// query at position p sees all of the block (cpu::kv_reads_sealed), else the staged I8 row.
__device__ float channel_key_dot(const KVLayer& kv, const float* qv, const int32_t* table, int kv_head, int j, int p) {
  const int lane = threadIdx.x, hd = kv.head_dim, bs = kv.block_size, b = j / bs;
  const int64_t block = table[b];
  float part = 0.0f;
  if (p >= (b + 1) * bs - 1) {
    const uint8_t* codes =
        static_cast<const uint8_t*>(kv.k) + ((block * kv.n_kv_heads + kv_head) * bs + j % bs) * (hd / 2);
    const int64_t ch = (block * kv.n_kv_heads + kv_head) * hd;
    for (int d = 0; d < kMaxDimsPerLane; ++d) {
      const int i = lane + 32 * d;
      if (i >= hd) break;
      const uint8_t byte = codes[i / 32 * 16 + i % 16];
      const float s = f16_bits_to_f32(kv.k_scales[ch + i]), m = -static_cast<float>(kv.k_zeros[ch + i]) * s;
      part = fmaf(qv[d], fmaf(static_cast<float>(i % 32 < 16 ? byte & 0x0f : byte >> 4), s, m), part);
    }
  } else {
    const RowReader S{kv.k_stage, kv.k_stage_scales, kv.k_stage_zeros, KVDType::I8, hd};
    const int64_t row = (static_cast<int64_t>(kv.stage_of_block[block]) * kv.n_kv_heads + kv_head) * bs + j % bs;
    float s, m;
    S.params(row, &s, &m);
    for (int d = 0; d < kMaxDimsPerLane; ++d) {
      const int i = lane + 32 * d;
      if (i < hd) part = fmaf(qv[d], S(row, i, s, m), part);
    }
  }
  return part;
}

__device__ void attend_range(const KVLayer& kv, const float* qh, const int32_t* table, int kv_head, float scale, int j0,
                             int j1, int p, Partial& st) {
  const int lane = threadIdx.x, hd = kv.head_dim, bs = kv.block_size;
  const RowReader K{kv.k, kv.k_scales, kv.k_zeros, kv.k_dtype, hd};
  const RowReader V{kv.v, kv.v_scales, kv.v_zeros, kv.v_dtype, hd};
  float qv[kMaxDimsPerLane];
  for (int d = 0; d < kMaxDimsPerLane; ++d) {
    const int i = lane + 32 * d;
    qv[d] = i < hd ? qh[i] : 0.0f;
    st.acc[d] = 0.0f;
  }
  st.run_max = -INFINITY;
  st.denom = 0.0f;
  for (int j = j0; j < j1; ++j) {
    const int64_t row = (static_cast<int64_t>(table[j / bs]) * kv.n_kv_heads + kv_head) * bs + j % bs;
    float part = 0.0f;
    if (kv.k_dtype == KVDType::I4Channel) {
      part = channel_key_dot(kv, qv, table, kv_head, j, p);
    } else {
      float ks, km;
      K.params(row, &ks, &km);
      for (int d = 0; d < kMaxDimsPerLane; ++d) {
        const int i = lane + 32 * d;
        if (i < hd) part = fmaf(qv[d], K(row, i, ks, km), part);
      }
    }
    const float sc = warp_sum(part) * scale;
    if (sc > st.run_max) {
      const float corr = expf(st.run_max - sc);  // 0 on the first key
      st.denom *= corr;
      for (int d = 0; d < kMaxDimsPerLane; ++d) st.acc[d] *= corr;
      st.run_max = sc;
    }
    const float pr = expf(sc - st.run_max);
    st.denom += pr;
    float vs, vm;
    V.params(row, &vs, &vm);
    for (int d = 0; d < kMaxDimsPerLane; ++d) {
      const int i = lane + 32 * d;
      if (i < hd) st.acc[d] = fmaf(pr, V(row, i, vs, vm), st.acc[d]);
    }
  }
}

// How row t's positions 0..p split: runs of `chunk` (at least kAttnSplitKeys), `splits` of them (<= kAttnSplits).
__device__ void split_of(int p, int* chunk, int* splits) {
  const int n = p + 1;
  const int c = (n + kAttnSplits - 1) / kAttnSplits;
  *chunk = c > kAttnSplitKeys ? c : kAttnSplitKeys;
  *splits = (n + *chunk - 1) / *chunk;
}

// Rows that see at most kAttnSplitKeys positions: the whole softmax in one warp.
__global__ void attend(KVLayer kv, const float* q, int64_t ldq, float* out, int64_t ldo, const int32_t* pos,
                       const int32_t* tables, const int64_t* table_start, int group, float scale) {
  const int t = blockIdx.x, head = blockIdx.y, lane = threadIdx.x;
  const int p = pos[t];
  if (p + 1 > kAttnSplitKeys) return;  // attend_split's
  const int hd = kv.head_dim;
  Partial st;
  attend_range(kv, q + t * ldq + static_cast<int64_t>(head) * hd, tables + table_start[t], head / group, scale, 0,
               p + 1, p, st);
  float* o = out + t * ldo + static_cast<int64_t>(head) * hd;
  const float inv = 1.0f / st.denom;
  for (int d = 0; d < kMaxDimsPerLane; ++d) {
    const int i = lane + 32 * d;
    if (i < hd) o[i] = st.acc[d] * inv;
  }
}

// Longer rows, one warp per (row, head, run): its partial softmax into part[((t * n_heads + head) * kAttnSplits +
// split) * (head_dim + 2) ..]: max, denominator, then the head_dim sums.
__global__ void attend_split(KVLayer kv, const float* q, int64_t ldq, const int32_t* pos, const int32_t* tables,
                             const int64_t* table_start, int group, float scale, float* part) {
  const int t = blockIdx.x, head = blockIdx.y, split = blockIdx.z, lane = threadIdx.x, n_heads = gridDim.y;
  const int p = pos[t];
  if (p + 1 <= kAttnSplitKeys) return;  // attend's
  int chunk, splits;
  split_of(p, &chunk, &splits);
  if (split >= splits) return;
  const int hd = kv.head_dim, j0 = split * chunk, j1 = min(p + 1, j0 + chunk);
  Partial st;
  attend_range(kv, q + t * ldq + static_cast<int64_t>(head) * hd, tables + table_start[t], head / group, scale, j0, j1,
               p, st);
  float* w = part + ((static_cast<int64_t>(t) * n_heads + head) * kAttnSplits + split) * (hd + 2);
  if (lane == 0) {
    w[0] = st.run_max;
    w[1] = st.denom;
  }
  for (int d = 0; d < kMaxDimsPerLane; ++d) {
    const int i = lane + 32 * d;
    if (i < hd) w[2 + i] = st.acc[d];
  }
}

// The runs of a long row combined in run order: each rescaled to the largest max, out = sums / denominator.
__global__ void attend_combine(const float* part, const int32_t* pos, int head_dim, float* out, int64_t ldo) {
  const int t = blockIdx.x, head = blockIdx.y, lane = threadIdx.x, n_heads = gridDim.y;
  const int p = pos[t];
  if (p + 1 <= kAttnSplitKeys) return;
  int chunk, splits;
  split_of(p, &chunk, &splits);
  const float* w = part + (static_cast<int64_t>(t) * n_heads + head) * kAttnSplits * (head_dim + 2);
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, w[s * (head_dim + 2)]);
  float denom = 0.0f, acc[kMaxDimsPerLane] = {};
  for (int s = 0; s < splits; ++s) {
    const float* ws = w + s * (head_dim + 2);
    const float f = expf(ws[0] - m);
    denom = fmaf(ws[1], f, denom);
    for (int d = 0; d < kMaxDimsPerLane; ++d) {
      const int i = lane + 32 * d;
      if (i < head_dim) acc[d] = fmaf(ws[2 + i], f, acc[d]);
    }
  }
  float* o = out + t * ldo + static_cast<int64_t>(head) * head_dim;
  const float inv = 1.0f / denom;
  for (int d = 0; d < kMaxDimsPerLane; ++d) {
    const int i = lane + 32 * d;
    if (i < head_dim) o[i] = acc[d] * inv;
  }
}

}  // namespace

void paged_attention(const KVLayer& kv, const float* q, int64_t ldq, float* out, int64_t ldo, const int32_t* pos,
                     const int32_t* tables, const int64_t* table_start, int64_t T, int n_heads, float scale,
                     float* scratch, void* stream) {
  if (kv.head_dim > 32 * kMaxDimsPerLane) throw std::invalid_argument("paged_attention on CUDA: head_dim above 256");
  if (T <= 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int group = n_heads / kv.n_kv_heads;
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(n_heads));
  attend<<<grid, 32, 0, s>>>(kv, q, ldq, out, ldo, pos, tables, table_start, group, scale);
  // the long rows (each kernel skips the other's rows: no host knowledge of positions, so a recorded graph holds)
  const dim3 split_grid(static_cast<unsigned>(T), static_cast<unsigned>(n_heads), kAttnSplits);
  attend_split<<<split_grid, 32, 0, s>>>(kv, q, ldq, pos, tables, table_start, group, scale, scratch);
  attend_combine<<<grid, 32, 0, s>>>(scratch, pos, kv.head_dim, out, ldo);
}

}  // namespace lmrt::cuda
