// 4-bit linear, written once against the vector API of simd_avx2.h / simd_avx512.h:
// dequantisation and the in-register decode tile. Raw pointers and intrinsics only (see
// isa_kernels.h).
//
// Bit-exactness with w4_dequant + linear_tile of the same ISA (the prefill path) rests on
// three things kept identical here: each weight is fma(float(code), scale, min); each
// output accumulates fma(x, w, acc) over kLanes-wide chunks of K in ascending order
// (K % 32 == 0, so no tail); and the final hsum + bias is linear_simd.inl's.
//
// note: included by linear_w4_avx2.cpp / linear_w4_avx512.cpp inside their ISA namespace,
// after isa_kernels.h and their simd_*.h, so each ISA compiles its own copy with its own
// flags; never include it anywhere else. It includes nothing itself.

namespace {

// Vectors per run of 32 inputs (16 bytes of codes).
constexpr int kRunVecs = 32 / kLanes;

// One run of 32 inputs -> w[j] = inputs kLanes * j .. kLanes * j + kLanes - 1 as fp32.
// Byte i holds inputs i (low nibble) and i + 16 (high nibble); bytes are zero-extended
// straight into 32-bit lanes, so the nibbles split without byte shuffles. Each weight is the
// group's fma(float(code), scale, min), formed per weight or looked up in the group's table of
// those 16 values (W4Table: the same bits).
inline void dequant32(const uint8_t* p, W4Table t, Vec w[kRunVecs]) {
  constexpr int kHalf = kRunVecs / 2;  // vectors per 16 inputs
  IVec b[kHalf];
  for (int h = 0; h < kHalf; ++h) b[h] = widen_u8(p + kLanes * h);
  for (int h = 0; h < kHalf; ++h) {
    w[h] = w4_low(b[h], t);
    w[kHalf + h] = w4_high(b[h], t);
  }
}

inline int group_shift(int gs) { return gs == 32 ? 5 : gs == 64 ? 6 : 7; }

// How many tiles ahead the kernel prefetches the codes (decode streams W once).
constexpr int kPrefetchTiles = 4;

// R rows of x against C rows of W (codes/scales/mins point at the first of the C rows).
template <int R, int C>
inline void kernel(const float* x, int64_t ldx, int64_t K, const uint8_t* codes, const float* scales, const float* mins,
                   int gshift, const float* bias, float* y, int64_t ldy) {
  const int64_t G = K >> gshift, kb = K / 2;
  Vec acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = zero();
  for (int64_t k = 0; k < K; k += 32) {
    // The codes of a later tile, in order, spread over this tile's K loop (never faults).
    const uint8_t* ahead = codes + kPrefetchTiles * C * kb + k / 2 * C;
    for (int off = 0; off < C * 16; off += 64) prefetch(ahead + off);
    const int64_t g = k >> gshift;
    for (int c = 0; c < C; ++c) {
      Vec w[kRunVecs];
      dequant32(codes + c * kb + k / 2, w4_table(scales[c * G + g], mins[c * G + g]), w);
      for (int j = 0; j < kRunVecs; ++j)
        for (int r = 0; r < R; ++r) acc[r][c] = fmadd(load(x + r * ldx + k + kLanes * j), w[j], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * ldy + c] = hsum(acc[r][c]) + (bias ? bias[c] : 0.0f);
}

template <int R, int C>
inline void row_block(const float* x, int64_t ldx, int64_t K, const uint8_t* codes, const float* scales,
                      const float* mins, int gshift, const float* bias, float* y, int64_t ldy, int64_t m, int64_t n0,
                      int64_t n1) {
  const int64_t G = K >> gshift, kb = K / 2;
  int64_t n = n0;
  for (; n + C <= n1; n += C)
    kernel<R, C>(x + m * ldx, ldx, K, codes + n * kb, scales + n * G, mins + n * G, gshift, bias ? bias + n : nullptr,
                 y + m * ldy + n, ldy);
  for (; n < n1; ++n)
    kernel<R, 1>(x + m * ldx, ldx, K, codes + n * kb, scales + n * G, mins + n * G, gshift, bias ? bias + n : nullptr,
                 y + m * ldy + n, ldy);
}

// w4_tile (isa_kernels.h). C4, C3, C2, C1: W rows per block of 4, 3, 2, 1 rows of x,
// sized to the ISA's register file.
template <int C4, int C3, int C2, int C1>
void tile(const float* x, int64_t ldx, int64_t K, const uint8_t* codes, const float* scales, const float* mins,
          int group_size, const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int gs = group_shift(group_size);
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) row_block<4, C4>(x, ldx, K, codes, scales, mins, gs, bias, y, ldy, m, n0, n1);
  if (m1 - m == 3) row_block<3, C3>(x, ldx, K, codes, scales, mins, gs, bias, y, ldy, m, n0, n1);
  if (m1 - m == 2) row_block<2, C2>(x, ldx, K, codes, scales, mins, gs, bias, y, ldy, m, n0, n1);
  if (m1 - m == 1) row_block<1, C1>(x, ldx, K, codes, scales, mins, gs, bias, y, ldy, m, n0, n1);
}

// w4_dequant (isa_kernels.h).
inline void dequant(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K, int64_t n0,
                    int64_t n1, float* out) {
  const int gshift = group_shift(group_size);
  const int64_t G = K >> gshift, kb = K / 2;
  for (int64_t n = n0; n < n1; ++n) {
    float* o = out + (n - n0) * K;
    for (int64_t k = 0; k < K; k += 32) {
      const int64_t g = k >> gshift;
      Vec w[kRunVecs];
      dequant32(codes + n * kb + k / 2, w4_table(scales[n * G + g], mins[n * G + g]), w);
      for (int j = 0; j < kRunVecs; ++j) store(o + k + kLanes * j, w[j]);
    }
  }
}

}  // namespace
