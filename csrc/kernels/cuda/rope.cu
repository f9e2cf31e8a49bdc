// Rotary embedding on the GPU (ops.h states the contract; cpu/rope.cpp is the reference).
#include <cuda_runtime.h>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

// One block a token, one thread a (head, pair): the angle in fp32 as the CPU forms it, then the separately rounded
// products of torch's q * cos + rotate_half(q) * sin.
__global__ void rope_kernel(float* x, int64_t ldx, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq,
                            float attn_scale) {
  const int half = head_dim / 2;
  const float p = static_cast<float>(pos[blockIdx.x]);
  float* xr = x + blockIdx.x * ldx;
  for (int t = threadIdx.x; t < n_heads * half; t += blockDim.x) {
    const int h = t / half, i = t % half;
    const float a = p * inv_freq[i];
    const float c = cosf(a) * attn_scale, s = sinf(a) * attn_scale;
    float* xh = xr + static_cast<int64_t>(h) * head_dim;
    const float x1 = xh[i], x2 = xh[i + half];
    const float a1 = x1 * c, b1 = x2 * s, a2 = x2 * c, b2 = x1 * s;
    xh[i] = a1 - b1;
    xh[i + half] = a2 + b2;
  }
}

}  // namespace

void rope(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq,
          float attn_scale, void* stream) {
  if (M <= 0) return;
  rope_kernel<<<static_cast<unsigned>(M), 256, 0, static_cast<cudaStream_t>(stream)>>>(x, ldx, n_heads, head_dim, pos,
                                                                                       inv_freq, attn_scale);
}

}  // namespace lmrt::cuda
