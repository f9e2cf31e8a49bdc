// silu_mul's row (and the tile path's fused gate/up block) with AVX-512: exp_ps (simd_avx512.h, within 2 ulp) instead
// of libm's expf, and a reciprocal instead of a division.
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

void silu_mul_row(const float* g, const float* u, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store(out + i, silu_mul_ps(load(g + i), load(u + i)));
  if (i < n) {
    const Tail t = tail_mask(static_cast<int>(n - i));
    store_tail(out + i, t, silu_mul_ps(load_tail(g + i, t), load_tail(u + i, t)));
  }
}

void silu_mul_pairs(const float* c, int64_t ldc, uint16_t* out, int64_t ldo) {
  for (int64_t m = 0; m < 32; ++m) {
    const Vec v = silu_mul_bf16_ps(load(c + m * ldc), load(c + m * ldc + 16));  // gates [16], then their ups [16]
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + m * ldo), _mm512_cvtepi32_epi16(round_bf16(v)));
  }
}

}  // namespace lmrt::cpu::avx512
