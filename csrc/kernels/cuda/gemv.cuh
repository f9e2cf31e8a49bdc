// What the GEMVs share (linear.cu, linear_w4.cu): a block of kGemvWarps warps computes KO outputs for R rows of x,
// K split among the warps; each lane's sums are reduced in a fixed order here, and rows are launched in slices of
// kGemvMaxRows. Included by those two files only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace lmrt::cuda {

constexpr int kGemvWarps = 8;    // warps per block, K split among them
constexpr int kGemvMaxRows = 8;  // rows of x per launch (more are launched in slices of 8)

// A value summed over the warp by a fixed shuffle tree (xor 16, 8, 4, 2, 1): every lane gets the same bits.
__device__ __forceinline__ float warp_sum_tree(float a) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(0xFFFFFFFFu, a, off);
  return a;
}

// The block's sums: each lane's acc[o][r], a fixed shuffle tree over the warp, then the warps' partial sums in warp
// order (part: the block's shared scratch), plus bias; y[r, n0 + o] for the outputs below N. So an output does not
// depend on M or on N.
template <int KO, int R>
__device__ __forceinline__ void gemv_store(float (&acc)[KO][R], float (&part)[kGemvWarps][KO * R], int64_t n0,
                                           int64_t N, const float* __restrict__ bias, float* __restrict__ y,
                                           int64_t ldy) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 0; o < KO; ++o)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float a = warp_sum_tree(acc[o][r]);
      if (lane == 0) part[warp][o * R + r] = a;
    }
  __syncthreads();
  if (threadIdx.x < KO * R) {
    const int o = threadIdx.x / R, r = threadIdx.x % R;
    if (n0 + o < N) {
      float a = part[0][threadIdx.x];
#pragma unroll
      for (int w = 1; w < kGemvWarps; ++w) a += part[w][threadIdx.x];
      y[r * ldy + n0 + o] = a + (bias ? bias[n0 + o] : 0.0f);
    }
  }
}

// launch(std::integral_constant<int, R>{}, x_rows, y_rows) for each slice of at most kGemvMaxRows rows of M.
template <typename Launch>
void by_row_slices(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, const Launch& launch) {
  for (int64_t m = 0; m < M; m += kGemvMaxRows) {
    const int64_t r = M - m < kGemvMaxRows ? M - m : kGemvMaxRows;
    const float* xm = x + m * ldx;
    float* ym = y + m * ldy;
    switch (r) {
      case 1: launch(std::integral_constant<int, 1>{}, xm, ym); break;
      case 2: launch(std::integral_constant<int, 2>{}, xm, ym); break;
      case 3: launch(std::integral_constant<int, 3>{}, xm, ym); break;
      case 4: launch(std::integral_constant<int, 4>{}, xm, ym); break;
      case 5: launch(std::integral_constant<int, 5>{}, xm, ym); break;
      case 6: launch(std::integral_constant<int, 6>{}, xm, ym); break;
      case 7: launch(std::integral_constant<int, 7>{}, xm, ym); break;
      default: launch(std::integral_constant<int, 8>{}, xm, ym); break;
    }
  }
}

}  // namespace lmrt::cuda
