// The dense linear on the GPU (fp32 or bf16 weights, fp32 x and sums), and the residual add (ops.h states the
// contracts; cpu/linear.cpp is the reference).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/gemv.cuh"
#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

constexpr int kWarps = kGemvWarps;
constexpr int kOuts = 4;  // outputs per block: each x load serves all of them

__device__ __forceinline__ float bf16_to_float(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

// The weights w[n, k .. k + 7] as floats (8 consecutive; 16-byte aligned for F32, 16-byte for BF16).
template <bool BF16>
__device__ __forceinline__ void load8(const void* w, int64_t off, float (&out)[8]) {
  if (BF16) {
    const uint4 q = __ldg(reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(w) + off));
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = __uint_as_float(words[i] << 16);
      out[2 * i + 1] = __uint_as_float(words[i] & 0xFFFF0000u);
    }
  } else {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(w) + off);
    const float4 a = __ldg(p), b = __ldg(p + 1);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
    out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
  }
}

// A block computes kOuts outputs n0.. for R rows of x (gemv.cuh). Vector path (VEC: K a multiple of 8, ldx of 4): K in
// steps of 256 inputs, a warp taking steps warp, warp + 8, ..., lane l inputs 8 l .. 8 l + 7 of a step. Scalar path:
// steps of 32 inputs, lane l input l. The sums in gemv_store's fixed order.
template <int R, bool BF16, bool VEC>
__global__ void __launch_bounds__(32 * kWarps)
    dense_gemv(const float* __restrict__ x, int64_t K, int64_t ldx, const void* __restrict__ w, int64_t N,
               const float* __restrict__ bias, float* __restrict__ y, int64_t ldy) {
  __shared__ float part[kWarps][kOuts * R];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kOuts;
  float acc[kOuts][R];
#pragma unroll
  for (int o = 0; o < kOuts; ++o)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[o][r] = 0.0f;
  if (VEC) {
    for (int64_t k = (static_cast<int64_t>(warp) * 32 + lane) * 8; k < K; k += 256 * kWarps) {
      float xs[R][8];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float4* p = reinterpret_cast<const float4*>(x + r * ldx + k);
        const float4 a = p[0], b = p[1];
        xs[r][0] = a.x, xs[r][1] = a.y, xs[r][2] = a.z, xs[r][3] = a.w;
        xs[r][4] = b.x, xs[r][5] = b.y, xs[r][6] = b.z, xs[r][7] = b.w;
      }
#pragma unroll
      for (int o = 0; o < kOuts; ++o) {
        if (n0 + o >= N) continue;
        float wv[8];
        load8<BF16>(w, (n0 + o) * K + k, wv);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float a = acc[o][r];
#pragma unroll
          for (int i = 0; i < 8; ++i) a = fmaf(xs[r][i], wv[i], a);
          acc[o][r] = a;
        }
      }
    }
  } else {
    for (int64_t k = static_cast<int64_t>(warp) * 32 + lane; k < K; k += 32 * kWarps) {
#pragma unroll
      for (int o = 0; o < kOuts; ++o) {
        if (n0 + o >= N) continue;
        const int64_t off = (n0 + o) * K + k;
        const float wv = BF16 ? bf16_to_float(static_cast<const uint16_t*>(w)[off]) : static_cast<const float*>(w)[off];
#pragma unroll
        for (int r = 0; r < R; ++r) acc[o][r] = fmaf(x[r * ldx + k], wv, acc[o][r]);
      }
    }
  }
  gemv_store<kOuts, R>(acc, part, n0, N, bias, y, ldy);
}

template <int R>
void launch(const float* x, int64_t K, int64_t ldx, const void* w, bool bf16, bool vec, int64_t N, const float* bias,
            float* y, int64_t ldy, cudaStream_t s) {
  const unsigned blocks = static_cast<unsigned>((N + kOuts - 1) / kOuts);
  const unsigned threads = 32 * kWarps;
  if (bf16 && vec)
    dense_gemv<R, true, true><<<blocks, threads, 0, s>>>(x, K, ldx, w, N, bias, y, ldy);
  else if (bf16)
    dense_gemv<R, true, false><<<blocks, threads, 0, s>>>(x, K, ldx, w, N, bias, y, ldy);
  else if (vec)
    dense_gemv<R, false, true><<<blocks, threads, 0, s>>>(x, K, ldx, w, N, bias, y, ldy);
  else
    dense_gemv<R, false, false><<<blocks, threads, 0, s>>>(x, K, ldx, w, N, bias, y, ldy);
}

__global__ void add_kernel(float* __restrict__ x, const float* __restrict__ h, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] += h[i];
}

}  // namespace

void linear(const float* x, int64_t M, int64_t K, int64_t ldx, const void* w, DType wdt, int64_t N, const float* bias,
            float* y, int64_t ldy, void* stream) {
  if (M <= 0 || N <= 0) return;
  const bool bf16 = wdt == DType::BF16;
  const bool vec = K % 8 == 0 && ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(w) % 16 == 0;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  by_row_slices(x, M, ldx, y, ldy, [&](auto rows, const float* xm, float* ym) {
    launch<decltype(rows)::value>(xm, K, ldx, w, bf16, vec, N, bias, ym, ldy, s);
  });
}

void add(float* x, const float* h, int64_t n, void* stream) {
  if (n <= 0) return;
  const int64_t blocks = (n + 255) / 256 < 1024 ? (n + 255) / 256 : 1024;
  add_kernel<<<static_cast<unsigned>(blocks), 256, 0, static_cast<cudaStream_t>(stream)>>>(x, h, n);
}

}  // namespace lmrt::cuda
