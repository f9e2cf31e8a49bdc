// Sampling on the GPU (ops.h states the contracts): the greedy token of each logits row, so a step of greedy
// requests copies R token ids to the host instead of R x V logits.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

constexpr int kThreads = 256;

// The better of two (value, index) candidates: the larger value, the smaller index on a tie (the first maximum).
__device__ __forceinline__ void keep_best(float& v, int64_t& i, float v2, int64_t i2) {
  if (v2 > v || (v2 == v && i2 < i)) {
    v = v2;
    i = i2;
  }
}

// One block a row: each thread the indices t, t + 256, ... (its first maximum, and whether it saw NaN or +inf),
// then a shuffle tree per warp and the warps' results in turn. NaN fails every comparison, so it is never the
// maximum; -inf can be (a row of -inf gives index 0, as the host's rule).
__global__ void __launch_bounds__(kThreads)
    greedy_rows(const float* __restrict__ logits, int64_t V, int32_t* __restrict__ out) {
  __shared__ float best_v[kThreads / 32];
  __shared__ int64_t best_i[kThreads / 32];
  __shared__ int bad_any[kThreads / 32];
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * V;
  const float inf = __int_as_float(0x7f800000);
  float v = -inf;
  int64_t idx = INT64_MAX;
  int bad = 0;
  for (int64_t j = threadIdx.x; j < V; j += kThreads) {
    const float x = row[j];
    bad |= !(x < inf);  // NaN or +inf
    keep_best(v, idx, x, j);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float v2 = __shfl_xor_sync(0xFFFFFFFFu, v, off);
    const int64_t i2 = __shfl_xor_sync(0xFFFFFFFFu, idx, off);
    keep_best(v, idx, v2, i2);
    bad |= __shfl_xor_sync(0xFFFFFFFFu, bad, off);
  }
  if (lane == 0) {
    best_v[warp] = v;
    best_i[warp] = idx;
    bad_any[warp] = bad;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float bv = best_v[0];
    int64_t bi = best_i[0];
    int b = bad_any[0];
    for (int w = 1; w < kThreads / 32; ++w) {
      keep_best(bv, bi, best_v[w], best_i[w]);
      b |= bad_any[w];
    }
    out[blockIdx.x] = b ? -1 : bi == INT64_MAX ? 0 : static_cast<int32_t>(bi);
  }
}

}  // namespace

void greedy(const float* logits, int64_t R, int64_t V, int32_t* out, void* stream) {
  if (R <= 0) return;
  greedy_rows<<<static_cast<unsigned>(R), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(logits, V, out);
}

}  // namespace lmrt::cuda
