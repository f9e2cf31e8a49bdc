// AVX-512 (F + BW + VL + DQ) linear tile. Raw pointers and intrinsics only (see isa_kernels.h).
#include <immintrin.h>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {
namespace {

// How many tiles ahead the decode kernel prefetches W (see kernel()).
constexpr int kPrefetchTiles = 4;

// R rows of x against C rows of w, one accumulator per output element; every
// element sees the same FMA sequence whatever R and C are (batch invariance).
template <int R, int C, typename WT>
inline void kernel(const float* x, int64_t ldx, const WT* w, int64_t K, const float* bias,
                   float* y, int64_t ldy) {  // x [R, K], w [C, K], bias [C] or null, y [R, C]
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    if (R == 1) {
      // Decode streams W from DRAM as C interleaved short runs, which the hardware
      // prefetcher follows poorly; pull in the W rows of a later tile in order,
      // spread evenly over this tile's K loop. (A prefetch never faults.)
      const WT* ahead = w + kPrefetchTiles * C * K + k * C;
      for (int off = 0; off < C * 16; off += 64 / static_cast<int>(sizeof(WT)))
        _mm_prefetch(reinterpret_cast<const char*>(ahead + off), _MM_HINT_T0);
    }
    __m512 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load(w + c * K + k);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_loadu_ps(x + r * ldx + k);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  if (k < K) {
    const __mmask16 m = static_cast<__mmask16>((1u << (K - k)) - 1u);
    __m512 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load_tail(w + c * K + k, m);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = load_tail(x + r * ldx + k, m);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * ldy + c] = hsum(acc[r][c]) + (bias ? bias[c] : 0.0f);
}

template <typename WT>
void tile(const float* x, int64_t ldx, int64_t K, const WT* w, const float* bias, float* y,
          int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  // 4x6 uses 24 accumulators + 6 W + 1 x of the 32 zmm registers.
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) {
    int64_t n = n0;
    for (; n + 6 <= n1; n += 6)
      kernel<4, 6>(x + m * ldx, ldx, w + n * K, K, bias ? bias + n : nullptr, y + m * ldy + n, ldy);
    for (; n < n1; ++n)
      kernel<4, 1>(x + m * ldx, ldx, w + n * K, K, bias ? bias + n : nullptr, y + m * ldy + n, ldy);
  }
  for (; m < m1; ++m) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4)
      kernel<1, 4>(x + m * ldx, ldx, w + n * K, K, bias ? bias + n : nullptr, y + m * ldy + n, ldy);
    for (; n < n1; ++n)
      kernel<1, 1>(x + m * ldx, ldx, w + n * K, K, bias ? bias + n : nullptr, y + m * ldy + n, ldy);
  }
}

}  // namespace

void linear_tile(const float* x, int64_t ldx, int64_t K, const void* w, int wdt, const float* bias,
                 float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (wdt == kBF16)
    tile(x, ldx, K, static_cast<const uint16_t*>(w), bias, y, ldy, m0, m1, n0, n1);
  else
    tile(x, ldx, K, static_cast<const float*>(w), bias, y, ldy, m0, m1, n0, n1);
}

}  // namespace lmrt::cpu::avx512
