#include <cmath>

#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

// Follows HF LlamaRMSNorm in fp32: x * rsqrt(mean(x^2) + eps), then * w.
// Scalar only: O(M*H) next to the O(M*H*N) linears around it; rows four at a time (rmsnorm_rows).
namespace {

// R rows at once: each row's sum of squares in 8 lanes, in the order of one row alone (the same bits), but R
// independent chains of adds, so the adds' latency (the bound for one row) is hidden.
template <int R>
void rmsnorm_rows(const float* x, int64_t H, int64_t ldx, const float* w, float eps, float* y, int64_t ldy) {
  float acc[R][8] = {};
  int64_t i = 0;
  for (; i + 8 <= H; i += 8)
    for (int r = 0; r < R; ++r)
      for (int l = 0; l < 8; ++l) acc[r][l] += x[r * ldx + i + l] * x[r * ldx + i + l];
  for (int r = 0; r < R; ++r) {
    const float* xr = x + r * ldx;  // [H]
    float* yr = y + r * ldy;        // [H], may be xr
    float* a = acc[r];
    for (int l = 0; i + l < H; ++l) a[l] += xr[i + l] * xr[i + l];
    const float ss = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    const float rs = 1.0f / std::sqrt(ss / static_cast<float>(H) + eps);
    for (int64_t j = 0; j < H; ++j) yr[j] = w[j] * (xr[j] * rs);
  }
}

}  // namespace

void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y, int64_t ldy) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) rmsnorm_rows<4>(x + m * ldx, H, ldx, w, eps, y + m * ldy, ldy);
  for (; m < M; ++m) rmsnorm_rows<1>(x + m * ldx, H, ldx, w, eps, y + m * ldy, ldy);
}

}  // namespace lmrt::cpu
