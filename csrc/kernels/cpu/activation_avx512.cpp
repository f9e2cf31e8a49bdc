// silu_mul's row with AVX-512: exp_ps (simd_avx512.h, within 2 ulp) instead of libm's expf.
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

}  // namespace lmrt::cpu::avx512
