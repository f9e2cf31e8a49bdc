// The linear on the tensor cores, for prompt chunks and large batches (ops.h states the contract; the CPU's
// counterpart is cpu::linear_bf16_tiles): x and the weights rounded to bf16, products on the bf16 MMA units (WMMA
// 16x16x16 fragments, which compile to mma.sync), sums in fp32.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <cstring>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

using namespace nvcuda;

constexpr int kBM = 64, kBN = 64, kBK = 32;  // a block's tile of y, and the inputs a step of K takes
constexpr int kThreads = 128;                // 4 warps, each 32 x 32 of the tile (2 x 2 fragments)
constexpr int kLd = kBK + 8;                 // shared row stride in bf16 (80 bytes: rows 16 apart stay 32-byte aligned)
constexpr int kLdC = kBN + 4;                // the fp32 tile's row stride in the epilogue

// Two floats as a bf16 pair (a in the low half: the lower address), each rounded to nearest even.
__device__ __forceinline__ uint32_t pack_bf16(float a, float b) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

// 16 values of a step for one thread, as bf16: part[0] goes to columns col0 .. col0 + 7 of the step's 32 inputs,
// part[1] to col1 .. col1 + 7 (each part one 16-byte word, so each lands in shared memory as one store).
struct Step16 {
  uint4 part[2];
  int col0, col1;
};

__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  return make_uint4(pack_bf16(f[0], f[1]), pack_bf16(f[2], f[3]), pack_bf16(f[4], f[5]), pack_bf16(f[6], f[7]));
}

// 4-bit rows (W4Matrix's layout): a step of 32 inputs is one run of a row (16 bytes: input j in the low nibble of
// byte j, 16 + j in the high), inside one group. Thread t takes row t / 2 and bytes 8 h .. 8 h + 7 of the run (h = t
// % 2): inputs 8 h + b (low nibbles) and 16 + 8 h + b (high), each fma(code, scale, min) in fp32, rounded to bf16.
struct W4Loader {
  const uint8_t* codes;
  const float* scales;
  const float* mins;
  int gshift;
  int64_t K, N;
  __device__ void load(int64_t n0, int64_t k0, int t, Step16& s) const {
    const int64_t n = n0 + t / 2;
    const int h = t % 2;
    s.col0 = 8 * h;
    s.col1 = 16 + 8 * h;
    float lo[8], hi[8];
    if (n >= N) {
#pragma unroll
      for (int b = 0; b < 8; ++b) lo[b] = hi[b] = 0.0f;
    } else {
      const uint2 q = __ldg(reinterpret_cast<const uint2*>(codes + n * (K / 2) + k0 / 2 + 8 * h));
      const int64_t g = n * (K >> gshift) + (k0 >> gshift);
      const float sc = __ldg(scales + g), mn = __ldg(mins + g);
#pragma unroll
      for (int b = 0; b < 8; ++b) {
        const uint32_t byte = ((b < 4 ? q.x : q.y) >> (8 * (b % 4))) & 0xFFu;
        lo[b] = fmaf(static_cast<float>(byte & 0x0Fu), sc, mn);
        hi[b] = fmaf(static_cast<float>(byte >> 4), sc, mn);
      }
    }
    s.part[0] = pack8(lo);
    s.part[1] = pack8(hi);
  }
};

// Dense rows of F32 or BF16: thread t takes row t / 2, inputs 16 h .. 16 h + 15 of the step (h = t % 2; zeros past K
// or N). VEC: K a multiple of 8 and the matrix 16-byte aligned, so a thread's inputs load as 16-byte words.
template <bool BF16, bool VEC>
struct DenseLoader {
  const void* w;
  int64_t K, N;
  __device__ void load(int64_t n0, int64_t k0, int t, Step16& s) const {
    const int64_t n = n0 + t / 2, k = k0 + 16 * (t % 2);
    s.col0 = 16 * (t % 2);
    s.col1 = s.col0 + 8;
    if (BF16 && VEC && n < N && k + 16 <= K) {  // already bf16: the bytes as they are
      const uint4* p = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(w) + n * K + k);
      s.part[0] = __ldg(p);
      s.part[1] = __ldg(p + 1);
      return;
    }
    float f[2][8];
    if (!BF16 && VEC && n < N && k + 16 <= K) {
      const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(w) + n * K + k);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float4 v = __ldg(p + i);
        f[i / 2][4 * (i % 2)] = v.x, f[i / 2][4 * (i % 2) + 1] = v.y;
        f[i / 2][4 * (i % 2) + 2] = v.z, f[i / 2][4 * (i % 2) + 3] = v.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        float v = 0.0f;
        if (n < N && k + i < K) {
          if (BF16) {
            v = __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(w)[n * K + k + i]) << 16);
          } else {
            v = static_cast<const float*>(w)[n * K + k + i];
          }
        }
        f[i / 8][i % 8] = v;
      }
    }
    s.part[0] = pack8(f[0]);
    s.part[1] = pack8(f[1]);
  }
};

// x's part of a step: thread t takes row t / 2 of the tile's 64, inputs 16 h .. 16 h + 15 (h = t % 2), rounded to
// bf16 (zeros past M or K). VEC: K and ldx multiples of 4 and x 16-byte aligned.
template <bool VEC>
__device__ void load_x(const float* __restrict__ x, int64_t M, int64_t K, int64_t ldx, int64_t m0, int64_t k0, int t,
                       Step16& s) {
  const int64_t m = m0 + t / 2, k = k0 + 16 * (t % 2);
  s.col0 = 16 * (t % 2);
  s.col1 = s.col0 + 8;
  float f[2][8];
  if (VEC && m < M && k + 16 <= K) {
    const float4* p = reinterpret_cast<const float4*>(x + m * ldx + k);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float4 v = p[i];
      f[i / 2][4 * (i % 2)] = v.x, f[i / 2][4 * (i % 2) + 1] = v.y;
      f[i / 2][4 * (i % 2) + 2] = v.z, f[i / 2][4 * (i % 2) + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 16; ++i) f[i / 8][i % 8] = m < M && k + i < K ? x[m * ldx + k + i] : 0.0f;
  }
  s.part[0] = pack8(f[0]);
  s.part[1] = pack8(f[1]);
}

// A thread's 16 values into its row (t / 2) of a [64][kLd] bf16 operand: two 16-byte stores (the columns are
// multiples of 8 and rows 80 bytes apart, so each is 16-byte aligned).
__device__ __forceinline__ void put(__nv_bfloat16* op, int t, const Step16& s) {
  *reinterpret_cast<uint4*>(op + (t / 2) * kLd + s.col0) = s.part[0];
  *reinterpret_cast<uint4*>(op + (t / 2) * kLd + s.col1) = s.part[1];
}

// One block: rows m0 .. m0 + 63 of y, outputs n0 .. n0 + 63. Steps of 32 inputs; the next step's global loads are
// issued before this step's products (held in registers), so the loads of one step overlap the MMAs of the other.
// Sums: each output's 16-input fragment products accumulated in fp32 in K order, the same for any M (a row's tile
// position does not depend on M), so a row's outputs do not depend on the rows launched with it.
template <class Loader, bool XVEC>
__global__ void __launch_bounds__(kThreads)
    linear_tc_kernel(const float* __restrict__ x, int64_t M, int64_t K, int64_t ldx, Loader wl, int64_t N,
                     const float* __restrict__ bias, float* __restrict__ y, int64_t ldy) {
  // The step's operands (bf16) while the MMAs run; the fp32 tile of y after the last step (the same bytes).
  constexpr int kOperandBytes = 2 * kBM * kLd * 2, kTileBytes = kBM * kLdC * 4;
  __shared__ __align__(128) unsigned char smem[kOperandBytes > kTileBytes ? kOperandBytes : kTileBytes];
  __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(smem);  // [kBM][kLd]: x rows
  __nv_bfloat16* ws = xs + kBM * kLd;                          // [kBN][kLd]: W rows (B column-major)
  float* cs = reinterpret_cast<float*>(smem);                  // [kBM][kLdC]

  const int t = threadIdx.x, warp = t >> 5;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kBM, n0 = static_cast<int64_t>(blockIdx.x) * kBN;
  const int wr = (warp >> 1) * 32, wc = (warp & 1) * 32;  // the warp's 32 x 32 within the tile

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  Step16 xr, wv;
  load_x<XVEC>(x, M, K, ldx, m0, 0, t, xr);
  wl.load(n0, 0, t, wv);
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
    put(xs, t, xr);
    put(ws, t, wv);
    __syncthreads();
    if (k0 + kBK < K) {  // the next step's loads, in flight during this step's MMAs
      load_x<XVEC>(x, M, K, ldx, m0, k0 + kBK, t, xr);
      wl.load(n0, k0 + kBK, t, wv);
    }
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], xs + (wr + 16 * i) * kLd + kk, kLd);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], ws + (wc + 16 * j) * kLd + kk, kLd);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();  // every warp done reading this step's operands before the next overwrite them
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(cs + (wr + 16 * i) * kLdC + wc + 16 * j, acc[i][j], kLdC, wmma::mem_row_major);
  __syncthreads();
  for (int e = t; e < kBM * kBN; e += kThreads) {
    const int r = e / kBN, c = e % kBN;
    const int64_t m = m0 + r, n = n0 + c;
    if (m < M && n < N) y[m * ldy + n] = cs[r * kLdC + c] + (bias ? bias[n] : 0.0f);
  }
}

template <class Loader>
void launch(const float* x, int64_t M, int64_t K, int64_t ldx, const Loader& wl, int64_t N, const float* bias, float* y,
            int64_t ldy, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  const dim3 grid(static_cast<unsigned>((N + kBN - 1) / kBN), static_cast<unsigned>((M + kBM - 1) / kBM));
  const bool xvec = K % 4 == 0 && ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  if (xvec) {
    linear_tc_kernel<Loader, true><<<grid, kThreads, 0, stream>>>(x, M, K, ldx, wl, N, bias, y, ldy);
  } else {
    linear_tc_kernel<Loader, false><<<grid, kThreads, 0, stream>>>(x, M, K, ldx, wl, N, bias, y, ldy);
  }
}

}  // namespace

void linear_w4_tc(const float* x, int64_t M, int64_t K, int64_t ldx, const W4Matrix& w, int64_t N, const float* bias,
                  float* y, int64_t ldy, void* stream) {
  const int gshift = w.group_size == 32 ? 5 : w.group_size == 64 ? 6 : 7;
  launch(x, M, K, ldx, W4Loader{w.codes, w.scales, w.mins, gshift, K, N}, N, bias, y, ldy,
         static_cast<cudaStream_t>(stream));
}

void linear_tc(const float* x, int64_t M, int64_t K, int64_t ldx, const void* w, DType wdt, int64_t N,
               const float* bias, float* y, int64_t ldy, void* stream) {
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool aligned = reinterpret_cast<uintptr_t>(w) % 16 == 0;
  if (wdt == DType::BF16) {
    if (aligned && K % 8 == 0)
      launch(x, M, K, ldx, DenseLoader<true, true>{w, K, N}, N, bias, y, ldy, s);
    else
      launch(x, M, K, ldx, DenseLoader<true, false>{w, K, N}, N, bias, y, ldy, s);
  } else {
    if (aligned && K % 8 == 0)
      launch(x, M, K, ldx, DenseLoader<false, true>{w, K, N}, N, bias, y, ldy, s);
    else
      launch(x, M, K, ldx, DenseLoader<false, false>{w, K, N}, N, bias, y, ldy, s);
  }
}

}  // namespace lmrt::cuda
