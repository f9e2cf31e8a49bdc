// hadamard_heads' blocks of 16+ points with AVX-512 (isa_kernels.h's FwhtBlocksSig): fwht.h's fwht_block level by
// level, each output the same add or subtract of the same two values (a + c in the low half of a pair, a - c in
// the high half) and the same scaling on the last level, so the same bits as the scalar transform (and CUDA's).
// Levels of 1-8 points pair lanes of one register; levels of 16+ points pair whole registers.
#include <immintrin.h>

#include "kernels/cpu/isa_kernels.h"

namespace lmrt::cpu::avx512 {

namespace {

// One level within 16 lanes: lane i pairs with lane i ^ len; low lanes (i & len == 0) get self + partner,
// high lanes partner - self (the low value minus the high one).
template <int len>
inline __m512 level_in_lanes(__m512 v, __mmask16 high) {
  __m512 p;
  if constexpr (len == 1) p = _mm512_permute_ps(v, 0xB1);
  if constexpr (len == 2) p = _mm512_permute_ps(v, 0x4E);
  if constexpr (len == 4) p = _mm512_shuffle_f32x4(v, v, 0xB1);
  if constexpr (len == 8) p = _mm512_shuffle_f32x4(v, v, 0x4E);
  return _mm512_mask_sub_ps(_mm512_add_ps(v, p), high, p, v);
}

}  // namespace

void fwht_blocks(float* x, int64_t n_blocks, int B, float norm) {
  const __m512 vnorm = _mm512_set1_ps(norm);
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    float* v = x + blk * B;  // [B]
    for (int i = 0; i < B; i += 16) {
      __m512 r = _mm512_loadu_ps(v + i);
      r = level_in_lanes<1>(r, 0xAAAA);
      r = level_in_lanes<2>(r, 0xCCCC);
      r = level_in_lanes<4>(r, 0xF0F0);
      r = level_in_lanes<8>(r, 0xFF00);
      if (B == 16) r = _mm512_mul_ps(r, vnorm);
      _mm512_storeu_ps(v + i, r);
    }
    for (int len = 16; len < B; len <<= 1) {
      const bool last = 2 * len == B;
      for (int i = 0; i < B; i += 2 * len)
        for (int j = 0; j < len; j += 16) {
          const __m512 a = _mm512_loadu_ps(v + i + j), c = _mm512_loadu_ps(v + i + len + j);
          __m512 lo = _mm512_add_ps(a, c), hi = _mm512_sub_ps(a, c);
          if (last) {
            lo = _mm512_mul_ps(lo, vnorm);
            hi = _mm512_mul_ps(hi, vnorm);
          }
          _mm512_storeu_ps(v + i + j, lo);
          _mm512_storeu_ps(v + i + len + j, hi);
        }
    }
  }
}

}  // namespace lmrt::cpu::avx512
