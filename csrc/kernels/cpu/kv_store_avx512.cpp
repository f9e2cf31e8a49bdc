// AVX-512 forms of the two loops of quantizing a KV row on write (isa_kernels.h's KVRowRangeSig / KVRowCodesSig):
// the same operations as kv_quant.h's scalar kv_row_range / kv_row_codes, 16 dims at a time, so the same results
// (min and max are exact in any order; the division, the rounding by the 1.5 * 2^23 constant and the clamp are
// each one IEEE operation per dim, as there).
#include <immintrin.h>

#include "kernels/cpu/isa_kernels.h"

namespace lmrt::cpu::avx512 {

namespace {

inline __mmask16 tail_of(int left) { return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u); }

}  // namespace

bool kv_row_range(const float* x, int hd, float* mn_out, float* mx_out) {
  __m512 mn = _mm512_setzero_ps(), mx = _mm512_setzero_ps();  // the range widened to include 0
  __mmask16 bad = 0;                                          // lanes that met a NaN or an infinity
  for (int i = 0; i < hd; i += 16) {
    const __mmask16 m = tail_of(hd - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);  // lanes past hd: 0, which the range already holds
    // Not finite: every exponent bit set (|v| as bits >= infinity's).
    bad |= _mm512_cmpge_epu32_mask(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)),
                                   _mm512_set1_epi32(0x7f800000));
    mn = _mm512_min_ps(v, mn);  // v < mn ? v : mn, as the scalar loop
    mx = _mm512_max_ps(v, mx);
  }
  *mn_out = _mm512_reduce_min_ps(mn);
  *mx_out = _mm512_reduce_max_ps(mx);
  return bad == 0;
}

void kv_row_codes(const float* x, int hd, float s, uint8_t zero, int dt, uint8_t* codes) {
  const int qmax = dt == kI8 ? 255 : 15;
  if (s == 0.0f) {  // an all-zero row: every code 0 (kv_code_of)
    for (int i = 0; i < (dt == kI8 ? hd : hd / 2); ++i) codes[i] = 0;
    return;
  }
  const __m512 sv = _mm512_set1_ps(s), magic = _mm512_set1_ps(12582912.0f), zv = _mm512_set1_ps(float(zero));
  const __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(float(qmax));
  // clamp(round(v / s) + zero, 0, qmax) as an int32 per lane (kv_code_of)
  auto code = [&](__m512 v) {
    const __m512 r = _mm512_add_ps(_mm512_sub_ps(_mm512_add_ps(_mm512_div_ps(v, sv), magic), magic), zv);
    return _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(r, lo), hi));
  };
  if (dt == kI8) {
    for (int i = 0; i < hd; i += 16) {
      const __mmask16 m = tail_of(hd - i);
      _mm_mask_storeu_epi8(codes + i, m, _mm512_cvtepi32_epi8(code(_mm512_maskz_loadu_ps(m, x + i))));
    }
    return;
  }
  for (int r = 0; r < hd; r += 32) {  // I4: in each run of 32 dims, byte j = dim j | dim j + 16 << 4
    const __m512i c =
        _mm512_or_si512(code(_mm512_loadu_ps(x + r)), _mm512_slli_epi32(code(_mm512_loadu_ps(x + r + 16)), 4));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + r / 2), _mm512_cvtepi32_epi8(c));
  }
}

}  // namespace lmrt::cpu::avx512
