// silu_mul's row (and the tile path's fused gate/up block) with AVX-512: exp_ps (simd_avx512.h, within 2 ulp) instead
// of libm's expf, and a reciprocal instead of a division.
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

namespace {

// exp(-g) past fp32's range saturates near 3.4e38 (g / that is the limit 0 within 1e-36), and
// below -87.3 gives 0 (silu(g) = g). 1 / (1 + e) by rcp14 and one Newton step (relative error ~2^-27, a few
// times cheaper than a division: vdivps was most of this loop's time).
inline Vec silu_mul(Vec g, Vec u) {
  const Vec den = _mm512_add_ps(exp_ps(_mm512_sub_ps(zero(), g)), set1(1.0f));
  Vec r = _mm512_rcp14_ps(den);
  r = mul(r, _mm512_fnmadd_ps(den, r, set1(2.0f)));
  return mul(mul(g, r), u);
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
