// AVX-512 (F + BW + VL + DQ) int8 linear: conversion and the in-register decode tile (raw
// dots; the caller applies the per-row scale). Raw pointers and intrinsics only (see
// isa_kernels.h).
//
// Bit-exact with i8_dequant + avx512::linear_tile(bias = nullptr): float(q) is exact, each
// output accumulates fma(x, w, acc) over 16-lane chunks of K ascending, then one
// zero-masked tail chunk, then linear_avx512.cpp's hsum + 0.0f.
#include <immintrin.h>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {
namespace {

constexpr int kPrefetchTiles = 4;

template <int R, int C>
inline void kernel(const float* x, int64_t ldx, int64_t K, const int8_t* q, float* y, int64_t ldy) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const int8_t* ahead = q + kPrefetchTiles * C * K + k * C;
    for (int off = 0; off < C * 16; off += 64) _mm_prefetch(reinterpret_cast<const char*>(ahead + off), _MM_HINT_T0);
    __m512 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load(q + c * K + k);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_loadu_ps(x + r * ldx + k);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  if (k < K) {
    const __mmask16 m = static_cast<__mmask16>((1u << (K - k)) - 1u);
    __m512 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load_tail(q + c * K + k, m);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + r * ldx + k);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
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
    for (; k + 16 <= K; k += 16) _mm512_storeu_ps(o + k, load(s + k));
    if (k < K) {
      const __mmask16 m = static_cast<__mmask16>((1u << (K - k)) - 1u);
      _mm512_mask_storeu_ps(o + k, m, load_tail(s + k, m));
    }
  }
}

void i8_tile(const float* x, int64_t ldx, int64_t K, const int8_t* q, float* y, int64_t ldy, int64_t m0,
             int64_t m1, int64_t n0, int64_t n1) {
  int64_t m = m0;
  // 4x6: 24 accumulators + 6 W + 1 x of the 32 zmm registers.
  for (; m + 4 <= m1; m += 4) row_block<4, 6>(x, ldx, K, q, y, ldy, m, n0, n1);
  if (m1 - m == 3) row_block<3, 6>(x, ldx, K, q, y, ldy, m, n0, n1);
  if (m1 - m == 2) row_block<2, 6>(x, ldx, K, q, y, ldy, m, n0, n1);
  if (m1 - m == 1) row_block<1, 4>(x, ldx, K, q, y, ldy, m, n0, n1);
}

}  // namespace lmrt::cpu::avx512
