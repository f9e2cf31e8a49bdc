// The 4-bit linear on the GPU, decode path (ops.h states the contract).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

constexpr int kWarps = 8;    // outputs per block
constexpr int kMaxRows = 8;  // rows of x per launch (more are launched in slices of 8)

// One warp per output n. Lane l takes runs l, l + 32, ... of 32 inputs: 16 bytes of codes (byte j: input j in the
// low nibble, j + 16 in the high), one (scale, min) of its group, and the 32 inputs of each row from global
// memory (x is small and stays in L1/L2).
template <int R>
__global__ void w4_gemv(const float* __restrict__ x, int64_t K, int64_t ldx, const uint8_t* __restrict__ codes,
                        const float* __restrict__ scales, const float* __restrict__ mins, int gshift, int64_t N,
                        const float* __restrict__ bias, float* __restrict__ y, int64_t ldy) {
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const int64_t runs = K / 32, G = K >> gshift;
  const uint4* c = reinterpret_cast<const uint4*>(codes + n * (K / 2));
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  for (int64_t run = lane; run < runs; run += 32) {
    const uint4 q = c[run];
    const int64_t g = (run * 32) >> gshift;
    const float s = scales[n * G + g], mn = mins[n * G + g];
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
    float wl[16], wh[16];
#pragma unroll
    for (int b = 0; b < 16; ++b) {
      const uint32_t byte = (words[b >> 2] >> (8 * (b & 3))) & 0xFFu;
      wl[b] = fmaf(static_cast<float>(byte & 0x0Fu), s, mn);
      wh[b] = fmaf(static_cast<float>(byte >> 4), s, mn);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float4* xr = reinterpret_cast<const float4*>(x + r * ldx + run * 32);
      float a = acc[r];
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const float4 lo = xr[v], hi = xr[4 + v];
        a = fmaf(lo.x, wl[4 * v], a);
        a = fmaf(lo.y, wl[4 * v + 1], a);
        a = fmaf(lo.z, wl[4 * v + 2], a);
        a = fmaf(lo.w, wl[4 * v + 3], a);
        a = fmaf(hi.x, wh[4 * v], a);
        a = fmaf(hi.y, wh[4 * v + 1], a);
        a = fmaf(hi.z, wh[4 * v + 2], a);
        a = fmaf(hi.w, wh[4 * v + 3], a);
      }
      acc[r] = a;
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float a = acc[r];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(0xFFFFFFFFu, a, off);
    if (lane == 0) y[r * ldy + n] = a + (bias ? bias[n] : 0.0f);
  }
}

template <int R>
void launch(const float* x, int64_t K, int64_t ldx, const W4Matrix& w, int gshift, int64_t N, const float* bias,
            float* y, int64_t ldy, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((N + kWarps - 1) / kWarps);
  w4_gemv<R><<<blocks, 32 * kWarps, 0, stream>>>(x, K, ldx, w.codes, w.scales, w.mins, gshift, N, bias, y, ldy);
}

}  // namespace

void linear_w4(const float* x, int64_t M, int64_t K, int64_t ldx, const W4Matrix& w, int64_t N, const float* bias,
               float* y, int64_t ldy, void* stream) {
  const int gshift = w.group_size == 32 ? 5 : w.group_size == 64 ? 6 : 7;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  for (int64_t m = 0; m < M; m += kMaxRows) {
    const int64_t r = M - m < kMaxRows ? M - m : kMaxRows;
    const float* xm = x + m * ldx;
    float* ym = y + m * ldy;
    switch (r) {
      case 1: launch<1>(xm, K, ldx, w, gshift, N, bias, ym, ldy, s); break;
      case 2: launch<2>(xm, K, ldx, w, gshift, N, bias, ym, ldy, s); break;
      case 3: launch<3>(xm, K, ldx, w, gshift, N, bias, ym, ldy, s); break;
      case 4: launch<4>(xm, K, ldx, w, gshift, N, bias, ym, ldy, s); break;
      case 5: launch<5>(xm, K, ldx, w, gshift, N, bias, ym, ldy, s); break;
      case 6: launch<6>(xm, K, ldx, w, gshift, N, bias, ym, ldy, s); break;
      case 7: launch<7>(xm, K, ldx, w, gshift, N, bias, ym, ldy, s); break;
      default: launch<8>(xm, K, ldx, w, gshift, N, bias, ym, ldy, s); break;
    }
  }
}

}  // namespace lmrt::cuda
