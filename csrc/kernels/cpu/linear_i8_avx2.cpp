// AVX2 + FMA int8 linear: conversion and the in-register decode tile (raw dots; the
// caller applies the per-row scale). Raw pointers and intrinsics only (see isa_kernels.h).
//
// Bit-exact with i8_dequant + avx2::linear_tile(bias = nullptr): float(q) is exact, each
// output accumulates fma(x, w, acc) over 8-lane chunks of K ascending, then one
// zero-padded tail chunk, then linear_avx2.cpp's hsum + 0.0f.
#include <immintrin.h>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx2.h"

namespace lmrt::cpu::avx2 {
namespace {

constexpr int kPrefetchTiles = 4;

template <int R, int C>
inline void kernel(const float* x, int64_t ldx, int64_t K, const int8_t* q, float* y, int64_t ldy) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const int8_t* ahead = q + kPrefetchTiles * C * K + k * C;
    for (int off = 0; off < C * 8; off += 64) _mm_prefetch(reinterpret_cast<const char*>(ahead + off), _MM_HINT_T0);
    __m256 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load(q + c * K + k);
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + r * ldx + k);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  if (k < K) {
    const int rem = static_cast<int>(K - k);
    __m256 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load_tail(q + c * K + k, rem);
    for (int r = 0; r < R; ++r) {
      const __m256 xv = load_tail(x + r * ldx + k, rem);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * ldy + c] = hsum(acc[r][c]) + 0.0f;
}

template <int R, int C>
inline void row_block(const float* x, int64_t ldx, int64_t K, const int8_t* q, float* y, int64_t ldy, int64_t m,
                      int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + C <= n1; n += C) kernel<R, C>(x + m * ldx, ldx, K, q + n * K, y + m * ldy + n, ldy);
  for (; n < n1; ++n) kernel<R, 1>(x + m * ldx, ldx, K, q + n * K, y + m * ldy + n, ldy);
}

}  // namespace

void i8_dequant(const int8_t* q, int64_t K, int64_t n0, int64_t n1, float* out) {
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* s = q + n * K;
    float* o = out + (n - n0) * K;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) _mm256_storeu_ps(o + k, load(s + k));
    for (; k < K; ++k) o[k] = static_cast<float>(s[k]);
  }
}

void i8_tile(const float* x, int64_t ldx, int64_t K, const int8_t* q, float* y, int64_t ldy, int64_t m0,
             int64_t m1, int64_t n0, int64_t n1) {
  int64_t m = m0;
  // 4x3: 12 accumulators + 3 W + 1 x = all 16 ymm registers.
  for (; m + 4 <= m1; m += 4) row_block<4, 3>(x, ldx, K, q, y, ldy, m, n0, n1);
  if (m1 - m == 3) row_block<3, 3>(x, ldx, K, q, y, ldy, m, n0, n1);
  if (m1 - m == 2) row_block<2, 4>(x, ldx, K, q, y, ldy, m, n0, n1);
  if (m1 - m == 1) row_block<1, 4>(x, ldx, K, q, y, ldy, m, n0, n1);
}

}  // namespace lmrt::cpu::avx2
