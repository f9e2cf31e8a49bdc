// SiLU·mul on the GPU (ops.h states the contract).
#include <cuda_runtime.h>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void silu_mul_kernel(const float* gu, int64_t I, int64_t ldg, float* out, int64_t ldo) {
  const float* g = gu + blockIdx.y * ldg;
  float* o = out + blockIdx.y * ldo;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < I;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    o[i] = g[i] / (1.0f + expf(-g[i])) * g[I + i];
}

}  // namespace

void silu_mul(const float* gu, int64_t M, int64_t I, int64_t ldg, float* out, int64_t ldo, void* stream) {
  if (M <= 0 || I <= 0) return;
  const unsigned blocks_x =
      static_cast<unsigned>((I + kThreads - 1) / kThreads < 64 ? (I + kThreads - 1) / kThreads : 64);
  constexpr int64_t kMaxGridY = 65535;  // rows a launch (gridDim.y's limit)
  for (int64_t m = 0; m < M; m += kMaxGridY) {
    const unsigned rows = static_cast<unsigned>(M - m < kMaxGridY ? M - m : kMaxGridY);
    silu_mul_kernel<<<dim3(blocks_x, rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(gu + m * ldg, I, ldg,
                                                                                              out + m * ldo, ldo);
  }
}

}  // namespace lmrt::cuda
