// softmax_chunk with AVX512-BF16 (compiled with -mavx512bf16; runs only where avx512bf16_available()): the
// probabilities rounded to bf16 by VCVTNE2PS2BF16 (32 at a time, in key order) and summed into l by VDPBF16PS
// against ones (lane n takes keys 2n and 2n + 1 of each 32), the rest as avx512::softmax_chunk
// (attention_tiles_avx512.cpp; contract in isa_kernels.h). A probability below 2^-126 becomes 0, as the tiles
// take it anyway.
#include <cmath>

#include "kernels/cpu/attention_tiles_avx512.inl"
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512bf16 {

using namespace lmrt::cpu::avx512;  // simd_avx512.h's vector API

void softmax_chunk(const float* s, const int32_t* n_valid, int64_t R, float scale, float* m, float* l, uint16_t* p,
                   float* corr) {
  static_assert(kSoftmaxLanes == kLanes && kChunkVecs == 4, "a row is 4 vectors, l's sums one");
  const float scale2 = scale * kLog2e;
  const Vec vscale = set1(scale2);
  const __m512bh ones = reinterpret_cast<__m512bh>(_mm512_set1_epi16(0x3f80));  // bf16 1.0
  for (int64_t r = 0; r < R; ++r) {
    uint16_t* pr = p + r * kKeyChunk;  // [64]
    float* lr = l + r * kLanes;        // [16]
    Vec e[kChunkVecs];
    const float c = softmax_row_exp(s + r * kKeyChunk, n_valid[r], scale2, vscale, m + r, e);
    Vec sum = zero();
    for (int h = 0; h < 2; ++h) {  // keys 32h..32h + 31
      const __m512bh pb = _mm512_cvtne2ps_pbh(e[2 * h + 1], e[2 * h]);
      _mm512_storeu_si512(pr + 32 * h, reinterpret_cast<__m512i>(pb));
      sum = _mm512_dpbf16_ps(sum, pb, ones);
    }
    store(lr, _mm512_add_ps(_mm512_mul_ps(load(lr), set1(c)), sum));
    corr[r] = c;
  }
}

}  // namespace lmrt::cpu::avx512bf16
