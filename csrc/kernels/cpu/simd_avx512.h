// The vector API of simd_avx2.h at 16 fp32 lanes (AVX-512 F + BW + VL + DQ), for the
// width-generic kernels (*_simd.inl). Included only by *_avx512.cpp (see simd_avx2.h for
// why everything lives in an unnamed namespace).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace lmrt::cpu::avx512 {
namespace {

constexpr int kLanes = 16;
using Vec = __m512;    // kLanes fp32
using IVec = __m512i;  // kLanes int32
// The last r < kLanes elements of a row, as a mask register.
using Tail = __mmask16;
inline Tail tail_mask(int r) { return static_cast<__mmask16>((1u << r) - 1u); }

inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec set1(float v) { return _mm512_set1_ps(v); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c, one rounding
inline void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

// Unaligned loads of kLanes elements as fp32.
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
// bf16 -> fp32 in registers: widen to 32 bits and shift into the high half.
inline Vec load(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
// int8 -> fp32 (exact).
inline Vec load(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }

// Tails: loads give the elements selected by m, zero elsewhere, so a tail is one more
// full-width FMA; store_tail writes only those.
inline Vec load_tail(const float* p, Tail m) { return _mm512_maskz_loadu_ps(m, p); }
inline Vec load_tail(const uint16_t* p, Tail m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline Vec load_tail(const int8_t* p, Tail m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
}
inline void store_tail(float* p, Tail m, Vec v) { _mm512_mask_storeu_ps(p, m, v); }

inline float load1(const float* p) { return *p; }
inline float load1(const uint16_t* p) {
  return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(static_cast<int>(*p) << 16)));
}

// 4-bit codes: kLanes bytes zero-extended into int32 lanes, then either nibble as fp32.
inline IVec widen_u8(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline Vec low_nibbles(IVec b) { return _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(0x0F))); }
inline Vec high_nibbles(IVec b) { return _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4)); }

// The one horizontal sum: a fixed pairing of lanes.
inline float hsum(Vec v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---- Beyond the shared vector API: used only by the AVX-512 files of the bf16 tile paths.

// fp32 -> bf16 in the low halves of the int32 lanes: the bits of f32_to_bf16_bits (bf16.h), round
// to nearest even, a NaN stays a quiet NaN.
inline IVec round_bf16(Vec x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
}

// e^x in fp32, within 2 ulp of the exact value over the normal range (Cephes' expf: x = n ln2 + r
// with |r| <= ln2 / 2, a degree-7 polynomial for e^r, then scaled by 2^n); 0 for x <= -87.34
// (where e^x is at most a denormal, which the tile unit flushes anyway).
inline Vec exp_ps(Vec x) {
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33654f), _CMP_LT_OQ);
  x = _mm512_min_ps(x, _mm512_set1_ps(88.72283f));
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.33654f));
  const Vec n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  Vec r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  Vec p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), _mm512_scalef_ps(p, n));
}

}  // namespace
}  // namespace lmrt::cpu::avx512
