// softmax_chunk with AVX512-BF16 (compiled with -mavx512bf16; runs only where avx512bf16_available()): the
// probabilities rounded to bf16 by VCVTNE2PS2BF16 (32 at a time, in key order) and summed into l by VDPBF16PS
// against ones (lane n takes keys 2n and 2n + 1 of each 32), the rest as avx512::softmax_chunk
// (attention_tiles_avx512.cpp; contract in isa_kernels.h). A probability below 2^-126 becomes 0, as the tiles
// take it anyway.
#include <cmath>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512bf16 {

using namespace lmrt::cpu::avx512;  // simd_avx512.h's vector API

void softmax_chunk(const float* s, const int32_t* n_valid, int64_t R, float scale, float* m, float* l, uint16_t* p,
                   float* corr) {
  static_assert(kSoftmaxLanes == kLanes && kKeyChunk == 4 * kLanes, "a row is 4 vectors, l's sums one");
  constexpr int kVecs = kKeyChunk / kLanes;
  const Vec vscale = set1(scale * kLog2e);
  const __m512bh ones = reinterpret_cast<__m512bh>(_mm512_set1_epi16(0x3f80));  // bf16 1.0
  for (int64_t r = 0; r < R; ++r) {
    const float* sr = s + r * kKeyChunk;  // [64]
    uint16_t* pr = p + r * kKeyChunk;     // [64]
    float* lr = l + r * kLanes;           // [16]
    const int nv = n_valid[r];
    Tail valid[kVecs];
    Vec x[kVecs];
    __mmask16 over = 0;  // lanes past m + slack: the chunk's max is needed (always on the first chunk: m = -inf)
    const Vec bound = set1(m[r] + kSoftmaxSlack);
    for (int v = 0; v < kVecs; ++v) {
      const int left = nv - v * kLanes;
      valid[v] = left >= kLanes ? static_cast<Tail>(0xffff) : left <= 0 ? static_cast<Tail>(0) : tail_mask(left);
      x[v] = mul(load(sr + v * kLanes), vscale);
      over |= _mm512_mask_cmp_ps_mask(valid[v], x[v], bound, _CMP_GT_OQ);
    }
    float c = 1.0f;
    if (over) {
      Vec vmax = set1(-INFINITY);
      for (int v = 0; v < kVecs; ++v) vmax = _mm512_mask_max_ps(vmax, valid[v], vmax, x[v]);
      const float mx = _mm512_reduce_max_ps(vmax);
      c = __builtin_exp2f(m[r] - mx);  // 0 on a row's first chunk (m = -inf)
      m[r] = mx;
    }
    const Vec neg_m = set1(-m[r]);
    Vec e[kVecs];
    for (int v = 0; v < kVecs; ++v)
      e[v] = valid[v] ? _mm512_maskz_mov_ps(valid[v], exp2_ps(_mm512_add_ps(x[v], neg_m))) : zero();
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
