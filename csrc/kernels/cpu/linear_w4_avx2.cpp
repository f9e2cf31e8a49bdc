// AVX2 + FMA 4-bit linear: dequantisation and the in-register decode tile. Raw pointers
// and intrinsics only (see isa_kernels.h).
//
// Bit-exactness with w4_dequant + avx2::linear_tile (the prefill path) rests on three
// things kept identical here: each weight is fma(float(code), scale, min); each output
// accumulates fma(x, w, acc) over 8-lane chunks of K in ascending order (K % 32 == 0, so
// no tail); and the final hsum + bias is linear_avx2.cpp's.
#include <immintrin.h>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx2.h"

namespace lmrt::cpu::avx2 {
namespace {

// One run of 32 inputs (16 bytes) -> w[0..3] = inputs 0-7, 8-15, 16-23, 24-31 as fp32.
// Bytes are zero-extended straight into 32-bit lanes (byte j holds inputs j and j + 16),
// so one and + one shift split the nibbles without byte shuffles.
inline void dequant32(const uint8_t* p, __m256 s, __m256 mn, __m256 w[4]) {
  const __m256i mask = _mm256_set1_epi32(0x0F);
  const __m256i b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));      // bytes 0-7
  const __m256i b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8)));  // 8-15
  w[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b0, mask)), s, mn);
  w[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b1, mask)), s, mn);
  w[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b0, 4)), s, mn);
  w[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b1, 4)), s, mn);
}

inline int group_shift(int gs) { return gs == 32 ? 5 : gs == 64 ? 6 : 7; }

// How many tiles ahead the kernel prefetches the codes (decode streams W once).
constexpr int kPrefetchTiles = 4;

// R rows of x against C rows of W (codes/scales/mins point at the first of the C rows).
template <int R, int C>
inline void kernel(const float* x, int64_t ldx, int64_t K, const uint8_t* codes, const float* scales,
                   const float* mins, int gshift, const float* bias, float* y, int64_t ldy) {
  const int64_t G = K >> gshift, kb = K / 2;
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 32) {
    // The codes of a later tile, in order, spread over this tile's K loop (never faults).
    const uint8_t* ahead = codes + kPrefetchTiles * C * kb + k / 2 * C;
    for (int off = 0; off < C * 16; off += 64) _mm_prefetch(reinterpret_cast<const char*>(ahead + off), _MM_HINT_T0);
    const int64_t g = k >> gshift;
    for (int c = 0; c < C; ++c) {
      __m256 w[4];
      dequant32(codes + c * kb + k / 2, _mm256_set1_ps(scales[c * G + g]), _mm256_set1_ps(mins[c * G + g]), w);
      for (int j = 0; j < 4; ++j)
        for (int r = 0; r < R; ++r)
          acc[r][c] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * ldx + k + 8 * j), w[j], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * ldy + c] = hsum(acc[r][c]) + (bias ? bias[c] : 0.0f);
}

template <int R, int C>
inline void row_block(const float* x, int64_t ldx, int64_t K, const uint8_t* codes, const float* scales,
                      const float* mins, int gshift, const float* bias, float* y, int64_t ldy, int64_t m,
                      int64_t n0, int64_t n1) {
  const int64_t G = K >> gshift, kb = K / 2;
  int64_t n = n0;
  for (; n + C <= n1; n += C)
    kernel<R, C>(x + m * ldx, ldx, K, codes + n * kb, scales + n * G, mins + n * G, gshift,
                 bias ? bias + n : nullptr, y + m * ldy + n, ldy);
  for (; n < n1; ++n)
    kernel<R, 1>(x + m * ldx, ldx, K, codes + n * kb, scales + n * G, mins + n * G, gshift,
                 bias ? bias + n : nullptr, y + m * ldy + n, ldy);
}

}  // namespace

void w4_dequant(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K,
                int64_t n0, int64_t n1, float* out) {
  const int gshift = group_shift(group_size);
  const int64_t G = K >> gshift, kb = K / 2;
  for (int64_t n = n0; n < n1; ++n) {
    float* o = out + (n - n0) * K;
    for (int64_t k = 0; k < K; k += 32) {
      const int64_t g = k >> gshift;
      __m256 w[4];
      dequant32(codes + n * kb + k / 2, _mm256_set1_ps(scales[n * G + g]), _mm256_set1_ps(mins[n * G + g]), w);
      for (int j = 0; j < 4; ++j) _mm256_storeu_ps(o + k + 8 * j, w[j]);
    }
  }
}

void w4_tile(const float* x, int64_t ldx, int64_t K, const uint8_t* codes, const float* scales,
             const float* mins, int group_size, const float* bias, float* y, int64_t ldy, int64_t m0,
             int64_t m1, int64_t n0, int64_t n1) {
  const int gs = group_shift(group_size);
  int64_t m = m0;
  // 4x2: 8 accumulators + 4 dequantised W + x + scale/min of the 16 ymm registers.
  for (; m + 4 <= m1; m += 4) row_block<4, 2>(x, ldx, K, codes, scales, mins, gs, bias, y, ldy, m, n0, n1);
  if (m1 - m == 3) row_block<3, 2>(x, ldx, K, codes, scales, mins, gs, bias, y, ldy, m, n0, n1);
  if (m1 - m == 2) row_block<2, 3>(x, ldx, K, codes, scales, mins, gs, bias, y, ldy, m, n0, n1);
  if (m1 - m == 1) row_block<1, 4>(x, ldx, K, codes, scales, mins, gs, bias, y, ldy, m, n0, n1);
}

}  // namespace lmrt::cpu::avx2
