// The int8 primitives of linear_w4a8_simd.inl at 16 lanes, but dot4 (maddubs or VNNI): included inside their
// namespace (and its unnamed namespace) by linear_w4a8_avx512.cpp and linear_w4a8_avx512vnni.cpp, after
// simd_avx512.h's vector API is visible; never elsewhere.

using BVec = __m512i;  // 64 bytes, or kLanes int32

inline BVec zero_b() { return _mm512_setzero_si512(); }
// nb blocks of 16 bytes (nb <= 4), zeros beyond (a masked load never faults past the end).
inline BVec load_blocks(const void* p, int nb) {
  if (nb == 4) return _mm512_loadu_si512(p);
  return _mm512_maskz_loadu_epi8(static_cast<__mmask64>((1ull << (16 * nb)) - 1), p);
}
inline void split_nibbles(BVec c, BVec& lo, BVec& hi) {
  const BVec m = _mm512_set1_epi8(0x0F);
  lo = _mm512_and_si512(c, m);
  hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), m);
}
inline Vec to_float(BVec v) { return _mm512_cvtepi32_ps(v); }
inline Vec spread(Vec v, BVec idx) { return _mm512_permutexvar_ps(idx, v); }
inline BVec lane_index(const int32_t* idx) { return _mm512_load_si512(idx); }
inline float amax32(const float* x) {
  return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(load(x)), _mm512_abs_ps(load(x + 16))));
}
inline int quant16(const float* x, float id, int8_t* out) {
  const __m512i a = _mm512_cvtps_epi32(_mm512_mul_ps(load(x), _mm512_set1_ps(id)));  // round half even
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtsepi32_epi8(a));
  return _mm512_reduce_add_epi32(a);
}
