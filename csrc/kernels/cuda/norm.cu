// RMSNorm on the GPU (ops.h states the contract).
#include <cuda_runtime.h>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

constexpr int kThreads = 256;

// One block a row: each thread sums the squares of elements t, t + 256, ... in order, then a fixed tree over the
// 256 partial sums (shared memory, halving), so the result depends only on the row. With `add`, each thread first
// adds add's elements into its own elements of x (the residual add, the same fp32 sums as cuda::add).
__global__ void rmsnorm_kernel(float* x, const float* add, int64_t H, int64_t ldx, const float* w, float eps, float* y,
                               int64_t ldy) {
  __shared__ float part[kThreads];
  float* xr = x + blockIdx.x * ldx;
  float* yr = y + blockIdx.x * ldy;
  if (add) {
    const float* ar = add + blockIdx.x * ldx;
    for (int64_t i = threadIdx.x; i < H; i += kThreads) xr[i] += ar[i];
  }
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

}  // namespace

void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y, int64_t ldy,
             void* stream) {
  if (M <= 0) return;
  // x is only read without `add`
  rmsnorm_kernel<<<static_cast<unsigned>(M), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      const_cast<float*>(x), nullptr, H, ldx, w, eps, y, ldy);
}

void add_rmsnorm(float* x, const float* add, int64_t M, int64_t H, const float* w, float eps, float* y, void* stream) {
  if (M <= 0) return;
  rmsnorm_kernel<<<static_cast<unsigned>(M), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(x, add, H, H, w, eps, y,
                                                                                               H);
}

}  // namespace lmrt::cuda
