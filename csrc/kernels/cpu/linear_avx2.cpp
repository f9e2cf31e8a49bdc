// AVX2 + FMA linear tile. Raw pointers and intrinsics only (see isa_kernels.h).
#include <immintrin.h>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx2.h"

namespace lmrt::cpu::avx2 {
namespace {

// How many tiles ahead the decode kernel prefetches W (see kernel()).
constexpr int kPrefetchTiles = 4;

// R rows of x against C rows of w, one accumulator per output element. Every
// element sees exactly the same FMA sequence (K chunks ascending, then the tail,
// then hsum) whatever R and C are, which is what makes linear batch invariant.
template <int R, int C, typename WT>
inline void kernel(const float* x, int64_t ldx, const WT* w, int64_t K, const float* bias,
                   float* y, int64_t ldy) {  // x [R, K], w [C, K], bias [C] or null, y [R, C]
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    if (R == 1) {
      // Decode streams W from DRAM as C interleaved short runs, which the hardware
      // prefetcher follows poorly; pull in the W rows of a later tile in order,
      // spread evenly over this tile's K loop. (A prefetch never faults, so
      // running past the end of W is harmless.)
      const WT* ahead = w + kPrefetchTiles * C * K + k * C;
      for (int off = 0; off < C * 8; off += 64 / static_cast<int>(sizeof(WT)))
        _mm_prefetch(reinterpret_cast<const char*>(ahead + off), _MM_HINT_T0);
    }
    __m256 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load(w + c * K + k);
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + r * ldx + k);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  if (k < K) {
    const int rem = static_cast<int>(K - k);
    __m256 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load_tail(w + c * K + k, rem);
    for (int r = 0; r < R; ++r) {
      const __m256 xv = load_tail(x + r * ldx + k, rem);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * ldy + c] = hsum(acc[r][c]) + (bias ? bias[c] : 0.0f);
}

template <typename WT>
void tile(const float* x, int64_t ldx, int64_t K, const WT* w, const float* bias, float* y,
          int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  // 4x3 uses 12 accumulators + 3 W + 1 x = all 16 ymm registers.
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) {
    int64_t n = n0;
    for (; n + 3 <= n1; n += 3)
      kernel<4, 3>(x + m * ldx, ldx, w + n * K, K, bias ? bias + n : nullptr, y + m * ldy + n, ldy);
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

}  // namespace lmrt::cpu::avx2
