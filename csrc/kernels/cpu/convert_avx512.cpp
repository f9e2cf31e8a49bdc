// fp32 -> bf16 rows with AVX-512 F (integer rounding: the same bits as f32_to_bf16_bits in bf16.h).
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

void to_bf16(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_cvtepi32_epi16(round_bf16(load(x + i))));
  if (i < n) {
    const Tail m = tail_mask(static_cast<int>(n - i));
    _mm512_mask_cvtepi32_storeu_epi16(out + i, m, round_bf16(load_tail(x + i, m)));
  }
}

}  // namespace lmrt::cpu::avx512
