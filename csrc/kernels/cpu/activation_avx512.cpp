// silu_mul's row (and the tile path's fused gate/up block) with AVX-512: exp_ps (simd_avx512.h, within 2 ulp) instead
// of libm's expf.
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

namespace {

// exp(-g) past fp32's range saturates near 3.4e38 (g / that is the limit 0 within 1e-36), and
// below -87.3 gives 0 (silu(g) = g).
inline Vec silu_mul(Vec g, Vec u) {
  const Vec e = exp_ps(_mm512_sub_ps(zero(), g));
  return mul(_mm512_div_ps(g, _mm512_add_ps(e, set1(1.0f))), u);
}

}  // namespace

void silu_mul_row(const float* g, const float* u, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store(out + i, silu_mul(load(g + i), load(u + i)));
  if (i < n) {
    const Tail t = tail_mask(static_cast<int>(n - i));
    store_tail(out + i, t, silu_mul(load_tail(g + i, t), load_tail(u + i, t)));
  }
}

void silu_mul_pairs(const float* c, int64_t ldc, uint16_t* out, int64_t ldo) {
  for (int64_t m = 0; m < 32; ++m) {
    const Vec v = silu_mul(load(c + m * ldc), load(c + m * ldc + 16));  // gates [16], then their ups [16]
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + m * ldo), _mm512_cvtepi32_epi16(round_bf16(v)));
  }
}

}  // namespace lmrt::cpu::avx512
