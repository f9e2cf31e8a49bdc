// The paged KV cache on the GPU: quantize-on-write (kv_store), int4 K per channel sealed block by block (kv_seal),
// and the Hadamard rotation of int8 K (hadamard_heads).
// ops.h states the contracts; cpu/kv_store.cpp, cpu/kv_quant.h and cpu/hadamard.cpp are the references, and
// kv_store writes the same bits as they do (the same integer rounding of the scale, IEEE division, rintf).
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>

#include "kernels/cuda/kv_quant.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/fwht.h"

namespace lmrt::cuda {
namespace {

// The smallest fp16 >= f for a finite f >= 0; the largest finite fp16 beyond it (cpu::f32_to_f16_bits_up).
__device__ uint16_t f32_to_f16_bits_up(float f) {
  if (!(f > 0.0f)) return 0;
  if (f > 65504.0f) return 0x7bff;
  const uint32_t b = __float_as_uint(f);
  const int e = static_cast<int>((b >> 23) & 0xffu) - 127;
  const uint32_t m = (b & 0x7fffffu) | 0x800000u;
  uint16_t h = 0;
  if (e >= -14)
    h = static_cast<uint16_t>(((e + 15) << 10) | ((m >> 13) & 0x3ffu));
  else if (e >= -24)
    h = static_cast<uint16_t>(m >> (-1 - e));
  if (f16_bits_to_f32(h) < f) ++h;
  return h;
}

__device__ uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__device__ int code_of(float v, float s, int zero, int qmax) {
  if (s == 0.0f) return 0;
  const float r = rintf(__fdiv_rn(v, s)) + static_cast<float>(zero);
  return r < 0.0f ? 0 : r > static_cast<float>(qmax) ? qmax : static_cast<int>(r);
}

__device__ float warp_min(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// cpu::kv_params: the scale (fp16 bits, rounded up) and zero point of the range [mn, mx] (0 inside it).
__device__ void params_of(float mn, float mx, int qmax, uint16_t* sbits, int* zero) {
  *sbits = f32_to_f16_bits_up(__fdiv_rn(mx - mn, static_cast<float>(qmax)));
  const float s0 = f16_bits_to_f32(*sbits);
  const int z = s0 > 0.0f ? static_cast<int>(rintf(__fdiv_rn(-mn, s0))) : 0;
  *zero = z < 0 ? 0 : z > qmax ? qmax : z;
}

// One warp a row (token m, kv head h, K or V): the range widened to 0 (min and max are exact in any order), the
// scale and zero point as cpu::kv_params forms them, then each lane's dims. Rows with a NaN or infinity get a NaN
// scale and zero codes.
__global__ void store_rows(KVLayer kv, const float* k, int64_t ldk, const float* v, int64_t ldv, const int64_t* slot) {
  const int m = blockIdx.x, h = blockIdx.y, which = blockIdx.z, lane = threadIdx.x;
  const int hd = kv.head_dim;
  KVDType dt = which ? kv.v_dtype : kv.k_dtype;
  const float* x = (which ? v + m * ldv : k + m * ldk) + static_cast<int64_t>(h) * hd;
  const int64_t block = slot[m] / kv.block_size, off = slot[m] % kv.block_size;
  int64_t row = (block * kv.n_kv_heads + h) * kv.block_size + off;
  void* cache = which ? kv.v : kv.k;
  uint16_t* scales = which ? kv.v_scales : kv.k_scales;
  uint8_t* zeros = which ? kv.v_zeros : kv.k_zeros;
  if (dt == KVDType::I4Channel) {  // an I8 row of the block's staging slot, until kv_seal
    const int32_t st = kv.stage_of_block[block];
    if (st < 0) return;
    row = (static_cast<int64_t>(st) * kv.n_kv_heads + h) * kv.block_size + off;
    cache = kv.k_stage;
    scales = kv.k_stage_scales;
    zeros = kv.k_stage_zeros;
    dt = KVDType::I8;
  }
  if (dt == KVDType::F32) {
    float* d = static_cast<float*>(cache) + row * hd;
    for (int i = lane; i < hd; i += 32) d[i] = x[i];
    return;
  }
  if (dt == KVDType::BF16) {
    uint16_t* d = static_cast<uint16_t*>(cache) + row * hd;
    for (int i = lane; i < hd; i += 32) d[i] = f32_to_bf16_bits(x[i]);
    return;
  }
  const int qmax = dt == KVDType::I8 ? 255 : 15;
  float mn = 0.0f, mx = 0.0f;
  bool finite = true;
  for (int i = lane; i < hd; i += 32) {
    finite = finite && isfinite(x[i]);
    mn = fminf(mn, x[i]);
    mx = fmaxf(mx, x[i]);
  }
  finite = __all_sync(0xffffffffu, finite);
  mn = warp_min(mn);
  mx = warp_max(mx);
  uint8_t* codes = static_cast<uint8_t*>(cache) + row * (dt == KVDType::I8 ? hd : hd / 2);
  uint16_t sbits = 0x7e00;  // NaN
  int zero = 0;
  if (finite) params_of(mn, mx, qmax, &sbits, &zero);
  if (lane == 0) {
    scales[row] = sbits;
    zeros[row] = static_cast<uint8_t>(zero);
  }
  const float s = f16_bits_to_f32(sbits);
  if (dt == KVDType::I8) {
    for (int i = lane; i < hd; i += 32) codes[i] = finite ? static_cast<uint8_t>(code_of(x[i], s, zero, qmax)) : 0;
  } else {  // I4: in each run of 32 dims, byte j = dim j | dim j + 16 << 4
    for (int b = lane; b < hd / 2; b += 32) {
      const int r = b / 16 * 32, j = b % 16;
      codes[b] =
          finite ? static_cast<uint8_t>(code_of(x[r + j], s, zero, qmax) | code_of(x[r + j + 16], s, zero, qmax) << 4)
                 : 0;
    }
  }
}

// cpu::kv_seal_block: one block of threads per (sealed block, kv head), a thread a channel: the staged I8 rows
// widened (fma(code, scale, -zero * scale), as the CPU), each channel's range over the block's rows (widened to 0;
// a NaN or infinity: a NaN scale and zero codes), then each row's int4 codes packed through shared memory.
__global__ void seal_blocks(KVLayer kv, const int32_t* blocks) {
  extern __shared__ uint8_t row_codes[];  // [head_dim] one row's codes
  const int h = blockIdx.y, c = threadIdx.x, hd = kv.head_dim, bs = kv.block_size;
  const int64_t block = blocks[blockIdx.x];
  const int32_t st = kv.stage_of_block[block];
  if (st < 0) return;  // every thread alike: no slot, nothing staged (the CPU's kernel throws)
  const int64_t srow0 = (static_cast<int64_t>(st) * kv.n_kv_heads + h) * bs;
  auto staged = [&](int j) {
    const int64_t r = srow0 + j;
    const float s = f16_bits_to_f32(kv.k_stage_scales[r]), m = -static_cast<float>(kv.k_stage_zeros[r]) * s;
    return fmaf(static_cast<float>(kv.k_stage[r * hd + c]), s, m);
  };
  float mn = 0.0f, mx = 0.0f;
  bool finite = true;
  for (int j = 0; j < bs; ++j) {
    const float x = staged(j);
    finite = finite && isfinite(x);
    mn = fminf(mn, x);
    mx = fmaxf(mx, x);
  }
  uint16_t sbits = 0x7e00;  // NaN: every code 0
  int zero = 0;
  if (finite) params_of(mn, mx, 15, &sbits, &zero);
  const int64_t ch = (block * kv.n_kv_heads + h) * hd + c;
  kv.k_scales[ch] = sbits;
  kv.k_zeros[ch] = static_cast<uint8_t>(zero);
  const float s = f16_bits_to_f32(sbits);
  uint8_t* codes = static_cast<uint8_t*>(kv.k) + (block * kv.n_kv_heads + h) * bs * (hd / 2);
  for (int j = 0; j < bs; ++j) {
    row_codes[c] = finite ? static_cast<uint8_t>(code_of(staged(j), s, zero, 15)) : 0;
    __syncthreads();
    if (c < hd / 2) {  // byte b of each run of 32: dim b | dim b + 16 << 4
      const int r = c / 16 * 32, i = c % 16;
      codes[j * (hd / 2) + c] = static_cast<uint8_t>(row_codes[r + i] | row_codes[r + i + 16] << 4);
    }
    __syncthreads();
  }
}

// One block a token, one thread a block of B dims: fwht_block, as the CPU runs it.
__global__ void hadamard_rows(float* x, int64_t ldx, int n_blocks, int B, float norm) {
  float* row = x + blockIdx.x * ldx;
  for (int b = threadIdx.x; b < n_blocks; b += blockDim.x) fwht_block(row + static_cast<int64_t>(b) * B, B, norm);
}

}  // namespace

void kv_store(const KVLayer& kv, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t M,
              const int64_t* slot, void* stream) {
  if (M <= 0) return;
  const dim3 grid(static_cast<unsigned>(M), static_cast<unsigned>(kv.n_kv_heads), 2);
  store_rows<<<grid, 32, 0, static_cast<cudaStream_t>(stream)>>>(kv, k, ldk, v, ldv, slot);
}

void kv_seal(const KVLayer& kv, const int32_t* blocks, int64_t num, void* stream) {
  if (kv.k_dtype != KVDType::I4Channel) throw std::invalid_argument("kv_seal: K is not I4Channel");
  if (kv.head_dim > 1024) throw std::invalid_argument("kv_seal on CUDA: head_dim above 1024");
  if (num <= 0) return;
  const dim3 grid(static_cast<unsigned>(num), static_cast<unsigned>(kv.n_kv_heads));
  seal_blocks<<<grid, kv.head_dim, kv.head_dim, static_cast<cudaStream_t>(stream)>>>(kv, blocks);
}

void hadamard_heads(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, void* stream) {
  if (M <= 0) return;
  const int B = head_dim & -head_dim;
  const int n_blocks = n_heads * head_dim / B;
  hadamard_rows<<<static_cast<unsigned>(M), 64, 0, static_cast<cudaStream_t>(stream)>>>(x, ldx, n_blocks, B,
                                                                                        1.0f / sqrtf(B));
}

}  // namespace lmrt::cuda
