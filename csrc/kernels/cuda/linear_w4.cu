// The 4-bit linear on the GPU, decode path (ops.h states the contract).
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/gemv.cuh"
#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

constexpr int kWarps = kGemvWarps;  // each taking every 8th step of K

// One output's 4 code bytes (inputs 4w .. 4w + 3 in the low nibbles, 16 + 4w .. in the high) against R rows of x
// (lo: those 4 inputs of a row, hi: the 4 sixteen later): each weight fma(code, scale, min), then 8 fmas a row, low
// inputs first, into acc[r].
template <int R>
__device__ __forceinline__ void fma_word(uint32_t word, float sc, float mn, const float4 (&lo)[R],
                                         const float4 (&hi)[R], float (&acc)[R]) {
  float wl[4], wh[4];
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    const uint32_t byte = (word >> (8 * b)) & 0xFFu;
    wl[b] = fmaf(static_cast<float>(byte & 0x0Fu), sc, mn);
    wh[b] = fmaf(static_cast<float>(byte >> 4), sc, mn);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float a = acc[r];
    a = fmaf(lo[r].x, wl[0], a);
    a = fmaf(lo[r].y, wl[1], a);
    a = fmaf(lo[r].z, wl[2], a);
    a = fmaf(lo[r].w, wl[3], a);
    a = fmaf(hi[r].x, wh[0], a);
    a = fmaf(hi[r].y, wh[1], a);
    a = fmaf(hi[r].z, wh[2], a);
    a = fmaf(hi[r].w, wh[3], a);
    acc[r] = a;
  }
}

// A block computes KO outputs n0.. for R rows of x: each x load serves the KO outputs (a warp reads its slice of x
// once per block, so x costs 8 R / KO times the codes' bytes: KO is 16 for 1 row, 8 for 2-4, 4 for more). K goes in
// steps of 8 runs of 32 inputs; a warp takes steps warp, warp + 8, ... (U at a time, their loads issued before any is
// used). In a step, lane l takes 4 bytes of run 8 * step + l / 4 (bytes 4 (l % 4) ..: inputs 4 (l % 4) + b in the low
// nibbles, 16 + 4 (l % 4) + b in the high), so a warp's loads of an output's codes are one 128-byte line and its loads
// of x two coalesced 16-byte reads a lane; the weights are formed in registers as fma(code, scale, min). The sums in
// gemv_store's fixed order (gemv.cuh).
template <int R, int KO, int U>
__global__ void __launch_bounds__(32 * kWarps)
    w4_gemv(const float* __restrict__ x, int64_t K, int64_t ldx, const uint8_t* __restrict__ codes,
            const float* __restrict__ scales, const float* __restrict__ mins, int gshift, int64_t N,
            const float* __restrict__ bias, float* __restrict__ y, int64_t ldy) {
  __shared__ float part[kWarps][KO * R];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane >> 2, quad = lane & 3;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * KO;
  const int64_t runs = K / 32, G = K >> gshift, steps = (runs + 7) / 8;
  float acc[KO][R];
#pragma unroll
  for (int o = 0; o < KO; ++o)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[o][r] = 0.0f;
  for (int64_t s0 = warp; s0 < steps; s0 += U * kWarps) {
    uint32_t word[U][KO];
    float sc[U][KO], mn[U][KO];
    bool on[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t run = (s0 + u * kWarps) * 8 + sub;
      on[u] = run < runs;  // false in a last, partial step, and past the last step
      const int64_t g = (run * 32) >> gshift;
#pragma unroll
      for (int o = 0; o < KO; ++o) {
        const bool live = on[u] && n0 + o < N;
        word[u][o] = live ? __ldg(reinterpret_cast<const uint32_t*>(codes + (n0 + o) * (K / 2) + run * 16) + quad) : 0u;
        sc[u][o] = live ? __ldg(scales + (n0 + o) * G + g) : 0.0f;
        mn[u][o] = live ? __ldg(mins + (n0 + o) * G + g) : 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (!on[u]) continue;
      const int64_t col = ((s0 + u * kWarps) * 8 + sub) * 32 + 4 * quad;
      float4 lo[R], hi[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        lo[r] = *reinterpret_cast<const float4*>(x + r * ldx + col);
        hi[r] = *reinterpret_cast<const float4*>(x + r * ldx + col + 16);
      }
#pragma unroll
      for (int o = 0; o < KO; ++o) fma_word<R>(word[u][o], sc[u][o], mn[u][o], lo, hi, acc[o]);
    }
  }
  gemv_store<KO, R>(acc, part, n0, N, bias, y, ldy);
}

constexpr int kStreamOuts = 8;   // the streamed shape: outputs a warp
constexpr int kStreamWarps = 2;  // warps a block (each on its own outputs: no block-wide reduction)

// The streamed shape (W4Gemv::Streamed, for 1-4 rows): a warp takes kStreamOuts outputs over all of K, lane l the
// runs l, l + 32, ...: one 16-byte load a run and output (a warp reads 512 contiguous bytes of each of its outputs'
// rows a step), the next step's codes, scales and mins loaded before this step's arithmetic (held in registers),
// x read as float4 (16-byte aligned rows) through L1, shared by the warp's outputs. Each lane sums its runs in
// order (inputs 4w .. 4w + 3, then 16 + 4w .., for w = 0..3), then a fixed shuffle tree: an output does not depend
// on M.
template <int R>
__global__ void __launch_bounds__(32 * kStreamWarps)
    w4_gemv_streamed(const float* __restrict__ x, int64_t K, int64_t ldx, const uint8_t* __restrict__ codes,
                     const float* __restrict__ scales, const float* __restrict__ mins, int gshift, int64_t N,
                     const float* __restrict__ bias, float* __restrict__ y, int64_t ldy) {
  constexpr int KO = kStreamOuts;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kStreamWarps + warp) * KO;
  if (n0 >= N) return;  // the whole warp
  const int64_t runs = K / 32, G = K >> gshift;
  float acc[KO][R];
#pragma unroll
  for (int o = 0; o < KO; ++o)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[o][r] = 0.0f;
  uint4 q[KO];
  float sc[KO], mn[KO];
  const auto fetch = [&](int64_t run, uint4(&qq)[KO], float (&ss)[KO], float (&mm)[KO]) {
    const int64_t g = (run * 32) >> gshift;
#pragma unroll
    for (int o = 0; o < KO; ++o) {
      const bool live = run < runs && n0 + o < N;
      qq[o] =
          live ? __ldg(reinterpret_cast<const uint4*>(codes + (n0 + o) * (K / 2) + run * 16)) : make_uint4(0, 0, 0, 0);
      ss[o] = live ? __ldg(scales + (n0 + o) * G + g) : 0.0f;
      mm[o] = live ? __ldg(mins + (n0 + o) * G + g) : 0.0f;
    }
  };
  fetch(lane, q, sc, mn);
  for (int64_t base = 0; base < runs; base += 32) {
    const int64_t run = base + lane;
    const bool more = base + 32 < runs;  // the same for the whole warp
    uint4 qn[KO];
    float sn[KO], mnn[KO];
    if (more) fetch(run + 32, qn, sn, mnn);
    if (run < runs) {
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        float4 lo[R], hi[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          lo[r] = __ldg(reinterpret_cast<const float4*>(x + r * ldx + run * 32 + 4 * w));
          hi[r] = __ldg(reinterpret_cast<const float4*>(x + r * ldx + run * 32 + 16 + 4 * w));
        }
#pragma unroll
        for (int o = 0; o < KO; ++o) {
          const uint32_t word = w == 0 ? q[o].x : w == 1 ? q[o].y : w == 2 ? q[o].z : q[o].w;
          fma_word<R>(word, sc[o], mn[o], lo, hi, acc[o]);
        }
      }
    }
    if (more) {
#pragma unroll
      for (int o = 0; o < KO; ++o) {
        q[o] = qn[o];
        sc[o] = sn[o];
        mn[o] = mnn[o];
      }
    }
  }
#pragma unroll
  for (int o = 0; o < KO; ++o)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float a = warp_sum_tree(acc[o][r]);
      if (lane == 0 && n0 + o < N) y[r * ldy + n0 + o] = a + (bias ? bias[n0 + o] : 0.0f);
    }
}

template <int R>
void launch(const float* x, int64_t K, int64_t ldx, const W4Matrix& w, int gshift, int64_t N, const float* bias,
            float* y, int64_t ldy, cudaStream_t stream, W4Gemv shape) {
  if constexpr (R <= 4) {
    if (shape == W4Gemv::Streamed) {
      const int64_t per_block = static_cast<int64_t>(kStreamOuts) * kStreamWarps;
      const unsigned blocks = static_cast<unsigned>((N + per_block - 1) / per_block);
      w4_gemv_streamed<R>
          <<<blocks, 32 * kStreamWarps, 0, stream>>>(x, K, ldx, w.codes, w.scales, w.mins, gshift, N, bias, y, ldy);
      return;
    }
  }
  const bool narrow = shape == W4Gemv::Narrow;
  // registers (ptxas, sm_90a): 128 at R = 1 (KO 16), 128-178 at R = 2-4 (KO 8); 5+ rows keep KO 4 (KO 8 took
  // 186-255 registers there: one block an SM)
  constexpr int KO = R == 1 ? 16 : R <= 4 ? 8 : 4;
  // narrow: the previous shape (4 outputs a block, 2 steps in flight), kept for benchmarks/bench_cuda.py
  if (narrow || KO == 4) {
    const unsigned blocks = static_cast<unsigned>((N + 3) / 4);
    w4_gemv<R, 4, 2><<<blocks, 32 * kWarps, 0, stream>>>(x, K, ldx, w.codes, w.scales, w.mins, gshift, N, bias, y, ldy);
    return;
  }
  if constexpr (KO != 4) {
    const unsigned blocks = static_cast<unsigned>((N + KO - 1) / KO);
    w4_gemv<R, KO, 1>
        <<<blocks, 32 * kWarps, 0, stream>>>(x, K, ldx, w.codes, w.scales, w.mins, gshift, N, bias, y, ldy);
  }
}

}  // namespace

void linear_w4(const float* x, int64_t M, int64_t K, int64_t ldx, const W4Matrix& w, int64_t N, const float* bias,
               float* y, int64_t ldy, void* stream, W4Gemv shape) {
  if (M <= 0 || N <= 0) return;
  if (ldx % 4 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0)  // the kernels read x 16 bytes at a time
    throw std::invalid_argument("cuda::linear_w4: x's rows must be 16-byte aligned (ldx " + std::to_string(ldx) +
                                " floats)");
  if (w.group_size != 32 && w.group_size != 64 && w.group_size != 128)
    throw std::invalid_argument("cuda::linear_w4: group_size " + std::to_string(w.group_size) +
                                " (the 4-bit format has groups of 32, 64 or 128)");
  const int gshift = w.group_size == 32 ? 5 : w.group_size == 64 ? 6 : 7;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const auto run = [&](auto rows, const float* xm, float* ym) {
    launch<decltype(rows)::value>(xm, K, ldx, w, gshift, N, bias, ym, ldy, s, shape);
  };
  if (shape == W4Gemv::Streamed) {  // slices of at most 4 rows, every one streamed: a row's sums in one order
    for (int64_t m = 0; m < M; m += 4) by_row_slices(x + m * ldx, M - m < 4 ? M - m : 4, ldx, y + m * ldy, ldy, run);
    return;
  }
  by_row_slices(x, M, ldx, y, ldy, run);
}

}  // namespace lmrt::cuda
