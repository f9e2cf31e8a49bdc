#include <cmath>

#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

// Follows HF LlamaRMSNorm in fp32: x * rsqrt(mean(x^2) + eps), then * w.
// Scalar only: O(M*H) next to the O(M*H*N) linears around it.
void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y, int64_t ldy) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;  // [H]
    float* yr = y + m * ldy;        // [H], may be xr
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= H; i += 8)
      for (int l = 0; l < 8; ++l) acc[l] += xr[i + l] * xr[i + l];
    for (int l = 0; i + l < H; ++l) acc[l] += xr[i + l] * xr[i + l];
    const float ss = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(H) + eps);
    for (int64_t j = 0; j < H; ++j) yr[j] = w[j] * (xr[j] * r);
  }
}

}  // namespace lmrt::cpu
