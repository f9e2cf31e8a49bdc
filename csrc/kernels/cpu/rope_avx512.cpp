// rope_apply with AVX-512 F, 16 dimensions of a head's halves at a time: the scalar bits (each product rounded,
// then one add: the _round intrinsics, which the compiler does not fuse into an fma under this file's -mfma).
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

void rope_apply(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const float* cs) {
  constexpr int kCur = _MM_FROUND_CUR_DIRECTION;
  const int half = head_dim / 2;
  for (int64_t m = 0; m < M; ++m) {
    const float* c = cs + m * head_dim;  // [half]
    const float* s = c + half;           // [half]
    for (int i = 0; i < half; i += kLanes) {
      const Tail t = half - i >= kLanes ? Tail(0xffff) : tail_mask(half - i);
      const Vec cv = load_tail(c + i, t), sv = load_tail(s + i, t);
      for (int h = 0; h < n_heads; ++h) {
        float* xh = x + m * ldx + static_cast<int64_t>(h) * head_dim;  // [head_dim]
        const Vec x1 = load_tail(xh + i, t), x2 = load_tail(xh + half + i, t);
        const Vec a1 = _mm512_mul_round_ps(x1, cv, kCur), b1 = _mm512_mul_round_ps(x2, sv, kCur);
        const Vec a2 = _mm512_mul_round_ps(x2, cv, kCur), b2 = _mm512_mul_round_ps(x1, sv, kCur);
        _mm512_mask_storeu_ps(xh + i, t, _mm512_sub_round_ps(a1, b1, kCur));
        _mm512_mask_storeu_ps(xh + half + i, t, _mm512_add_round_ps(a2, b2, kCur));
      }
    }
  }
}

}  // namespace lmrt::cpu::avx512
