#include <cmath>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

// Follows HF LlamaRMSNorm in fp32: x * rsqrt(mean(x^2) + eps), then * w; the sum of squares in isa_kernels.h's
// order (RmsnormSig), which norm_avx512.cpp gives with one 16-lane vector a row.
namespace {

// R rows at once: each row's sum of squares in the order of one row alone (the same bits), but R independent chains
// of adds, so the adds' latency (the bound for one row) is hidden.
template <int R>
void rmsnorm_rows(const float* x, int64_t H, int64_t ldx, const float* w, float eps, float* y, int64_t ldy) {
  float acc[R][16] = {};
  for (int r = 0; r < R; ++r)
    for (int64_t i = 0; i < H; ++i) {
      const float sq = x[r * ldx + i] * x[r * ldx + i];
      acc[r][i % 16] += sq;
    }
  for (int r = 0; r < R; ++r) {
    const float* xr = x + r * ldx;  // [H]
    float* yr = y + r * ldy;        // [H], may be xr
    float a[16];
    for (int l = 0; l < 16; ++l) a[l] = acc[r][l];
    for (int half = 8; half >= 1; half /= 2)
      for (int l = 0; l < half; ++l) a[l] += a[l + half];
    const float rs = 1.0f / std::sqrt(a[0] / static_cast<float>(H) + eps);
    for (int64_t j = 0; j < H; ++j) yr[j] = w[j] * (xr[j] * rs);
  }
}

}  // namespace

void scalar::rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y,
                     int64_t ldy) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) rmsnorm_rows<4>(x + m * ldx, H, ldx, w, eps, y + m * ldy, ldy);
  for (; m < M; ++m) rmsnorm_rows<1>(x + m * ldx, H, ldx, w, eps, y + m * ldy, ldy);
}

void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y, int64_t ldy) {
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) return avx512::rmsnorm(x, M, H, ldx, w, eps, y, ldy);
#endif
  scalar::rmsnorm(x, M, H, ldx, w, eps, y, ldy);
}

}  // namespace lmrt::cpu
