// RMSNorm and SiLU·mul on the GPU (ops.h states the contracts).
#include <cuda_runtime.h>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

constexpr int kThreads = 256;

// One block a row: each thread sums the squares of elements t, t + 256, ... in order, then a fixed tree over the
// 256 partial sums (shared memory, halving), so the result depends only on the row.
__global__ void rmsnorm_kernel(const float* x, int64_t H, int64_t ldx, const float* w, float eps, float* y,
                               int64_t ldy) {
  __shared__ float part[kThreads];
  const float* xr = x + blockIdx.x * ldx;
  float* yr = y + blockIdx.x * ldy;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += kThreads) s = fmaf(xr[i], xr[i], s);
  part[threadIdx.x] = s;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  const float inv = rsqrtf(part[0] / static_cast<float>(H) + eps);
  for (int64_t i = threadIdx.x; i < H; i += kThreads) yr[i] = xr[i] * inv * w[i];
}

__global__ void silu_mul_kernel(const float* gu, int64_t I, int64_t ldg, float* out, int64_t ldo) {
  const float* g = gu + blockIdx.y * ldg;
  float* o = out + blockIdx.y * ldo;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < I;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    o[i] = g[i] / (1.0f + expf(-g[i])) * g[I + i];
}

}  // namespace

void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y, int64_t ldy,
             void* stream) {
  if (M <= 0) return;
  rmsnorm_kernel<<<static_cast<unsigned>(M), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(x, H, ldx, w, eps, y,
                                                                                               ldy);
}

void silu_mul(const float* gu, int64_t M, int64_t I, int64_t ldg, float* out, int64_t ldo, void* stream) {
  if (M <= 0 || I <= 0) return;
  const unsigned blocks_x =
      static_cast<unsigned>((I + kThreads - 1) / kThreads < 64 ? (I + kThreads - 1) / kThreads : 64);
  silu_mul_kernel<<<dim3(blocks_x, static_cast<unsigned>(M)), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      gu, I, ldg, out, ldo);
}

}  // namespace lmrt::cuda
