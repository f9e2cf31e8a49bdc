// The fp32 / bf16-weight linear tile, written once against the vector API of simd_avx2.h /
// simd_avx512.h (Vec, kLanes, load, load_tail, fmadd, hsum, ...). Raw pointers and
// intrinsics only (see isa_kernels.h).
//
// note: included by linear_avx2.cpp / linear_avx512.cpp inside their ISA namespace, after
// isa_kernels.h and their simd_*.h, so each ISA compiles its own copy with its own flags;
// never include it anywhere else. It includes nothing itself.

namespace {

// How many tiles ahead the decode kernel prefetches W (see kernel()).
constexpr int kPrefetchTiles = 4;

// R rows of x against C rows of w, one accumulator per output element. Every
// element sees exactly the same FMA sequence (K chunks ascending, then the tail,
// then hsum) whatever R and C are, which is what makes linear batch invariant.
template <int R, int C, typename WT>
inline void kernel(const float* x, int64_t ldx, const WT* w, int64_t K, const float* bias, float* y,
                   int64_t ldy) {  // x [R, K], w [C, K], bias [C] or null, y [R, C]
  Vec acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = zero();
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    if (R == 1) {
      // Decode streams W from DRAM as C interleaved short runs, which the hardware
      // prefetcher follows poorly; pull in the W rows of a later tile in order,
      // spread evenly over this tile's K loop. (A prefetch never faults, so
      // running past the end of W is harmless.)
      const WT* ahead = w + kPrefetchTiles * C * K + k * C;
      for (int off = 0; off < C * kLanes; off += 64 / static_cast<int>(sizeof(WT))) prefetch(ahead + off);
    }
    Vec wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load(w + c * K + k);
    for (int r = 0; r < R; ++r) {
      const Vec xv = load(x + r * ldx + k);
      for (int c = 0; c < C; ++c) acc[r][c] = fmadd(xv, wv[c], acc[r][c]);
    }
  }
  if (k < K) {
    const Tail tail = tail_mask(static_cast<int>(K - k));
    Vec wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load_tail(w + c * K + k, tail);
    for (int r = 0; r < R; ++r) {
      const Vec xv = load_tail(x + r * ldx + k, tail);
      for (int c = 0; c < C; ++c) acc[r][c] = fmadd(xv, wv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * ldy + c] = hsum(acc[r][c]) + (bias ? bias[c] : 0.0f);
}

// C4: W rows per block of 4 rows of x, sized to the ISA's register file; single rows
// of x (decode) go 4 W rows at a time.
template <int C4, typename WT>
void tile(const float* x, int64_t ldx, int64_t K, const WT* w, const float* bias, float* y, int64_t ldy, int64_t m0,
          int64_t m1, int64_t n0, int64_t n1) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) {
    int64_t n = n0;
    for (; n + C4 <= n1; n += C4)
      kernel<4, C4>(x + m * ldx, ldx, w + n * K, K, bias ? bias + n : nullptr, y + m * ldy + n, ldy);
    for (; n < n1; ++n) kernel<4, 1>(x + m * ldx, ldx, w + n * K, K, bias ? bias + n : nullptr, y + m * ldy + n, ldy);
  }
  for (; m < m1; ++m) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4)
      kernel<1, 4>(x + m * ldx, ldx, w + n * K, K, bias ? bias + n : nullptr, y + m * ldy + n, ldy);
    for (; n < n1; ++n) kernel<1, 1>(x + m * ldx, ldx, w + n * K, K, bias ? bias + n : nullptr, y + m * ldy + n, ldy);
  }
}

// linear_tile (isa_kernels.h) with its weight dtype dispatched.
template <int C4>
void tile_any_dtype(const float* x, int64_t ldx, int64_t K, const void* w, int wdt, const float* bias, float* y,
                    int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (wdt == kBF16)
    tile<C4>(x, ldx, K, static_cast<const uint16_t*>(w), bias, y, ldy, m0, m1, n0, n1);
  else
    tile<C4>(x, ldx, K, static_cast<const float*>(w), bias, y, ldy, m0, m1, n0, n1);
}

}  // namespace
