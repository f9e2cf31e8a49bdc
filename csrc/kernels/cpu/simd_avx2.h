// Vector helpers shared by the *_avx2.cpp kernel files, and included only by them: the
// functions sit in an unnamed namespace, so each AVX2 object keeps its own copies and no
// AVX2 code can be linked into another path. Every kernel that reduces a dot product uses
// this one hsum, which is what makes their results bit-identical to each other.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace lmrt::cpu::avx2 {
namespace {

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
// bf16 -> fp32 in registers: widen to 32 bits and shift into the high half.
inline __m256 load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
// The last r < 8 floats, zero-padded, so a tail is one more full-width FMA.
inline __m256 load_tail(const float* p, int r) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(r), idx));
}
inline float load1(const float* p) { return *p; }
inline float load1(const uint16_t* p) {
  return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(static_cast<int>(*p) << 16)));
}
// The one horizontal sum: a fixed pairing of lanes.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace
}  // namespace lmrt::cpu::avx2
