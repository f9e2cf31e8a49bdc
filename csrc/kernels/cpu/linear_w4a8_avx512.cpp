// AVX-512 (F + BW + VL + DQ) 4-bit x int8 product: linear_w4a8_simd.inl at 16 lanes, the int8 dot products by
// maddubs (linear_w4a8_avx512vnni.cpp has the VNNI variant of the same tile).
#include <cmath>
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {
namespace {

#include "kernels/cpu/linear_w4a8_avx512.inl"

// u (0..15) times s (-127..127) in byte pairs fits int16 without saturation (2 * 15 * 127).
inline BVec dot4(BVec acc, BVec u, BVec s) {
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
}
// dot4 against the 4 signed bytes at p, broadcast (linear_w4a8_il_avx512.inl's form).
inline BVec dot4_at(BVec acc, BVec u, const int8_t* p) {
  int32_t a;
  std::memcpy(&a, p, sizeof a);
  return dot4(acc, u, _mm512_set1_epi32(a));
}

}  // namespace

#include "kernels/cpu/linear_w4a8_simd.inl"
// (after linear_w4a8_simd.inl: it uses that file's helpers)
#include "kernels/cpu/linear_w4a8_il_avx512.inl"

void q8_quantize(const float* x, int64_t ldx, int64_t K, int group_size, int64_t m0, int64_t m1, int8_t* q, int64_t ldq,
                 float* d, float* xs) {
  quantize<16>(x, ldx, K, group_size, m0, m1, q, ldq, d, xs, quant_runs16);
}

void a16_quantize(const float* x, int64_t ldx, int64_t K, int64_t m0, int64_t m1, uint8_t* hi, uint8_t* lo,
                  float* alpha) {
  for (int64_t m = m0; m < m1; ++m) {
    const float* xr = x + m * ldx;
    Vec amax = zero();
    for (int64_t k = 0; k < K; k += kLanes) {
      const __mmask16 t = K - k >= kLanes ? static_cast<__mmask16>(0xffff) : tail_mask(static_cast<int>(K - k));
      amax = max_lanes(amax, _mm512_abs_ps(_mm512_maskz_loadu_ps(t, xr + k)));
    }
    const float a = hmax(amax) / 32767.0f;
    const Vec inv = set1(a > 0.0f ? 1.0f / a : 0.0f);
    const __m512i bias = _mm512_set1_epi32(128), low = _mm512_set1_epi32(255);
    for (int64_t k = 0; k < K; k += kLanes) {
      const __mmask16 t = K - k >= kLanes ? static_cast<__mmask16>(0xffff) : tail_mask(static_cast<int>(K - k));
      const __m512i c = _mm512_cvtps_epi32(mul(_mm512_maskz_loadu_ps(t, xr + k), inv));  // round half even
      _mm512_mask_cvtepi32_storeu_epi8(hi + m * K + k, t, _mm512_add_epi32(_mm512_srai_epi32(c, 8), bias));
      _mm512_mask_cvtepi32_storeu_epi8(lo + m * K + k, t, _mm512_and_si512(c, low));
    }
    alpha[m] = a;
  }
}

void w4a8_tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const float* scales, const float* mins, int group_size,
               const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  tile<3, 4, 6, 8>(x, K, codes, scales, mins, group_size, bias, y, ldy, m0, m1, n0, n1);
}

void w4a8_il_tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const uint16_t* scales, const uint16_t* mins,
                  int group_size, const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0,
                  int64_t t1, int64_t up) {
  il_tile(x, K, codes, scales, mins, group_size, bias, y, ldy, m0, m1, t0, t1, up);
}

}  // namespace lmrt::cpu::avx512
