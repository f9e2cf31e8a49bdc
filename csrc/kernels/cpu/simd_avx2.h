// The vector API that the width-generic kernels (*_simd.inl) are written against, at 8
// fp32 lanes; simd_avx512.h provides the same names at 16. Included only by *_avx2.cpp:
// everything sits in an unnamed namespace, so each AVX2 object keeps its own copies and
// no AVX2 code can be linked into another path. Every kernel that reduces a dot product
// uses this one hsum, which is what makes their results bit-identical to each other (decode
// attention's scores, which no other kernel reproduces, reduce four at once with hsum4).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace lmrt::cpu::avx2 {
namespace {

constexpr int kLanes = 8;
using Vec = __m256;    // kLanes fp32
using IVec = __m256i;  // kLanes int32
// The last r < kLanes elements of a row. AVX2 has no mask registers: the count itself.
using Tail = int;
inline Tail tail_mask(int r) { return r; }

inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec set1(float v) { return _mm256_set1_ps(v); }
inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }  // a * b + c, one rounding
inline void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
// Into L2 only (prefetcht1): for streams read once from memory, far ahead (an L1 prefetch holds one of its few
// miss buffers until the line arrives).
inline void prefetch_l2(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }

// Unaligned loads of kLanes elements as fp32.
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
// bf16 -> fp32 in registers: widen to 32 bits and shift into the high half.
inline Vec load(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
// int8 -> fp32 (exact).
inline Vec load(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }

// Tails: loads give the first r elements, zero-padded, so a tail is one more full-width
// FMA; store_tail writes only the first r.
inline Vec load_tail(const float* p, Tail r) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(r), idx));
}
// AVX2 has no 16-bit masked load: copy the tail into a zeroed buffer.
inline Vec load_tail(const uint16_t* p, Tail r) {
  alignas(16) uint16_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < r; ++i) buf[i] = p[i];
  return load(buf);
}
// AVX2 has no 8-bit masked load: copy the tail into a zeroed buffer.
inline Vec load_tail(const int8_t* p, Tail r) {
  alignas(16) int8_t buf[16] = {0};
  for (int i = 0; i < r; ++i) buf[i] = p[i];
  return load(buf);
}
inline void store_tail(float* p, Tail r, Vec v) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(r), idx), v);
}

inline float load1(const float* p) { return *p; }
// IEEE half -> fp32 (F16C, exact).
inline float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
inline float load1(const uint16_t* p) {
  return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(static_cast<int>(*p) << 16)));
}

// 4-bit codes: kLanes bytes zero-extended into int32 lanes, then either nibble as fp32.
inline IVec widen_u8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
inline Vec bytes_f32(IVec b) { return _mm256_cvtepi32_ps(b); }
inline Vec low_nibbles(IVec b) { return _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(0x0F))); }
inline Vec high_nibbles(IVec b) { return _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4)); }
// A group's weights w(j) = fma(float(j), scale, min) by code j (simd_avx512.h looks them up in a
// 16-lane table; 8 lanes cannot hold it, so here each weight is its fma).
struct W4Table {
  Vec scale, min;
};
inline W4Table w4_table(float scale, float min) { return {_mm256_set1_ps(scale), _mm256_set1_ps(min)}; }
inline Vec w4_low(IVec b, W4Table t) { return fmadd(low_nibbles(b), t.scale, t.min); }
inline Vec w4_high(IVec b, W4Table t) { return fmadd(high_nibbles(b), t.scale, t.min); }

// The one horizontal sum: a fixed pairing of lanes.
inline float hsum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// out[0..3]: the sums of a, b, c and d, four at once (the attention scores of four keys). Every slot takes the
// same fixed pairing of its lanes (not hsum's), so a sum's bits do not depend on its slot or its neighbours.
inline void hsum4(Vec a, Vec b, Vec c, Vec d, float* out) {
  const Vec ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));  // per 128 bits: a02 b02 a13 b13
  const Vec cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
  const Vec lo = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(ab), _mm256_castps_pd(cd)));
  const Vec hi = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(ab), _mm256_castps_pd(cd)));
  const Vec s = _mm256_add_ps(lo, hi);  // per 128 bits: a b c d
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
}

// kLanes IEEE halves -> fp32 (F16C, exact).
inline Vec load_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline Vec max_lanes(Vec a, Vec b) { return _mm256_max_ps(a, b); }
inline float hmax(Vec v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// e^x in fp32, within 2 ulp over the normal range: Cephes' expf as exp_ps in simd_avx512.h, with 2^n
// built in the exponent field (x is clamped to [-87.34, 88], so n stays in [-126, 127]); 0 for
// x < -87.34.
inline Vec exp_ps(Vec x) {
  const Vec tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654f), _CMP_LT_OQ);
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.33654f));
  const Vec n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  Vec r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  Vec p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

}  // namespace
}  // namespace lmrt::cpu::avx2
