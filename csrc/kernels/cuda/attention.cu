// Paged attention on the GPU (ops.h states the contract; cpu/attention.cpp's scalar kernel is the reference): the
// first, plain form, one warp per (row, query head), the cache read block by block in position order with an online
// softmax, quantized rows widened in registers (x = code * scale + offset, as the CPU forms it). Split-K over long
// contexts, several heads of a KV group per warp and the prompt's flash-attention tiles come next.
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

__global__ void attend(KVLayer kv, const float* q, int64_t ldq, float* out, int64_t ldo, const int32_t* pos,
                       const int32_t* tables, const int64_t* table_start, int group, float scale) {
  const int t = blockIdx.x, head = blockIdx.y, lane = threadIdx.x;
  const int hd = kv.head_dim, bs = kv.block_size, kv_head = head / group;
  const float* qh = q + t * ldq + static_cast<int64_t>(head) * hd;
  const int32_t* table = tables + table_start[t];
  const RowReader K{kv.k, kv.k_scales, kv.k_zeros, kv.k_dtype, hd};
  const RowReader V{kv.v, kv.v_scales, kv.v_zeros, kv.v_dtype, hd};
  float qv[kMaxDimsPerLane], acc[kMaxDimsPerLane];
  for (int d = 0; d < kMaxDimsPerLane; ++d) {
    const int i = lane + 32 * d;
    qv[d] = i < hd ? qh[i] : 0.0f;
    acc[d] = 0.0f;
  }
  float run_max = -INFINITY, denom = 0.0f;
  const int p = pos[t];
  for (int j = 0; j <= p; ++j) {
    const int64_t row = (static_cast<int64_t>(table[j / bs]) * kv.n_kv_heads + kv_head) * bs + j % bs;
    float ks, km;
    K.params(row, &ks, &km);
    float part = 0.0f;
    for (int d = 0; d < kMaxDimsPerLane; ++d) {
      const int i = lane + 32 * d;
      if (i < hd) part = fmaf(qv[d], K(row, i, ks, km), part);
    }
    const float sc = warp_sum(part) * scale;
    if (sc > run_max) {
      const float corr = expf(run_max - sc);  // 0 on the first key
      denom *= corr;
      for (int d = 0; d < kMaxDimsPerLane; ++d) acc[d] *= corr;
      run_max = sc;
    }
    const float pr = expf(sc - run_max);
    denom += pr;
    float vs, vm;
    V.params(row, &vs, &vm);
    for (int d = 0; d < kMaxDimsPerLane; ++d) {
      const int i = lane + 32 * d;
      if (i < hd) acc[d] = fmaf(pr, V(row, i, vs, vm), acc[d]);
    }
  }
  float* o = out + t * ldo + static_cast<int64_t>(head) * hd;
  const float inv = 1.0f / denom;
  for (int d = 0; d < kMaxDimsPerLane; ++d) {
    const int i = lane + 32 * d;
    if (i < hd) o[i] = acc[d] * inv;
  }
}

}  // namespace

void paged_attention(const KVLayer& kv, const float* q, int64_t ldq, float* out, int64_t ldo, const int32_t* pos,
                     const int32_t* tables, const int64_t* table_start, int64_t T, int n_heads, float scale,
                     void* stream) {
  if (kv.k_dtype == KVDType::I4Channel)
    throw std::invalid_argument("paged_attention on CUDA: int4 keys per channel (I4Channel) are not on the GPU yet");
  if (kv.head_dim > 32 * kMaxDimsPerLane) throw std::invalid_argument("paged_attention on CUDA: head_dim above 256");
  if (T <= 0) return;
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(n_heads));
  attend<<<grid, 32, 0, static_cast<cudaStream_t>(stream)>>>(kv, q, ldq, out, ldo, pos, tables, table_start,
                                                             n_heads / kv.n_kv_heads, scale);
}

}  // namespace lmrt::cuda
