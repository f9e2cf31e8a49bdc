// int8 linear, written once against the vector API of simd_avx2.h / simd_avx512.h:
// conversion and the in-register decode tile (raw dots; the caller applies the per-row
// scale). Raw pointers and intrinsics only (see isa_kernels.h).
//
// Bit-exact with i8_dequant + linear_tile(bias = nullptr) of the same ISA: float(q) is
// exact, each output accumulates fma(x, w, acc) over kLanes-wide chunks of K ascending,
// then one zero-padded tail chunk, then the same hsum + 0.0f as linear_simd.inl.
//
// note: included by linear_i8_avx2.cpp / linear_i8_avx512.cpp inside their ISA namespace,
// after isa_kernels.h and their simd_*.h, so each ISA compiles its own copy with its own
// flags; never include it anywhere else. It includes nothing itself.

namespace {

constexpr int kPrefetchTiles = 4;

template <int R, int C>
inline void kernel(const float* x, int64_t ldx, int64_t K, const int8_t* q, float* y, int64_t ldy) {
  Vec acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = zero();
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    const int8_t* ahead = q + kPrefetchTiles * C * K + k * C;
    for (int off = 0; off < C * kLanes; off += 64) prefetch(ahead + off);
    Vec wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load(q + c * K + k);
    for (int r = 0; r < R; ++r) {
      const Vec xv = load(x + r * ldx + k);
      for (int c = 0; c < C; ++c) acc[r][c] = fmadd(xv, wv[c], acc[r][c]);
    }
  }
  if (k < K) {
    const Tail tail = tail_mask(static_cast<int>(K - k));
    Vec wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load_tail(q + c * K + k, tail);
    for (int r = 0; r < R; ++r) {
      const Vec xv = load_tail(x + r * ldx + k, tail);
      for (int c = 0; c < C; ++c) acc[r][c] = fmadd(xv, wv[c], acc[r][c]);
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

// i8_tile (isa_kernels.h). C4, C3, C2, C1: W rows per block of 4, 3, 2, 1 rows of x,
// sized to the ISA's register file.
template <int C4, int C3, int C2, int C1>
void tile(const float* x, int64_t ldx, int64_t K, const int8_t* q, float* y, int64_t ldy, int64_t m0, int64_t m1,
          int64_t n0, int64_t n1) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) row_block<4, C4>(x, ldx, K, q, y, ldy, m, n0, n1);
  if (m1 - m == 3) row_block<3, C3>(x, ldx, K, q, y, ldy, m, n0, n1);
  if (m1 - m == 2) row_block<2, C2>(x, ldx, K, q, y, ldy, m, n0, n1);
  if (m1 - m == 1) row_block<1, C1>(x, ldx, K, q, y, ldy, m, n0, n1);
}

// i8_dequant (isa_kernels.h).
inline void dequant(const int8_t* q, int64_t K, int64_t n0, int64_t n1, float* out) {
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* s = q + n * K;
    float* o = out + (n - n0) * K;
    int64_t k = 0;
    for (; k + kLanes <= K; k += kLanes) store(o + k, load(s + k));
    if (k < K) {
      const Tail tail = tail_mask(static_cast<int>(K - k));
      store_tail(o + k, tail, load_tail(s + k, tail));
    }
  }
}

}  // namespace
