// The 4-bit x int8 product over interleaved weights (W4Interleaved, ops.h) at 16 lanes, one lane per output, written
// once against dot4_at (VNNI's vpdpbusd or maddubs, the activations' 4 bytes read from memory): included inside
// their namespaces by linear_w4a8_avx512.cpp and linear_w4a8_avx512vnni.cpp after dot4_at and
// linear_w4a8_avx512.inl; never elsewhere. Every lane does
// scalar::w4a8_il_tile's operations in its order (the integer dots are exact, then one fma per run of 32 inputs,
// one per group for the mins, one add for the bias), so all three paths give the same bits, whatever the row count.

namespace {

constexpr int64_t kAhead = 8;  // runs of 32 inputs (256 bytes of a strip's codes) the kernel prefetches ahead
// Decode's 1-2 rows (each strip's codes read once, straight from memory) fetch into L2 (prefetcht1) and 64 runs
// (16 KB a strip) ahead instead: prefetches into L1 hold one of its few miss buffers each until the line arrives,
// which capped a thread's stream. One 71 MB matrix at 1 row (K = 576), Zen 4 host: 11.2 -> 23-24 GB/s on 1
// thread, 21.6 -> 38.5 on 2 (into L2 8 runs ahead: 14.9 / 28.9; 128 runs: as 64).
constexpr int64_t kAheadDecode = 64;

// R rows of x (from row m) against C strips of 16 outputs (from strip t): each 64-byte load of codes serves the R
// rows (the codes are read from memory once per R rows; the activations' 4 bytes are broadcast to 16 lanes).
// up > 0 (gate/up pairs): the C strips are C / 2 gate strips from t, each followed by its up strip (+ up), and
// the kernel stores silu(gate) * up for the C / 2 gate strips.
template <int R, int C>
inline void il_kernel(const Q8Rows& x, int64_t m, int64_t K, const uint8_t* codes, const uint16_t* scales,
                      const uint16_t* mins, int shift, const float* bias, float* y, int64_t ldy, int64_t t,
                      int64_t up) {
  const int64_t nblocks = K / 32, G = nblocks >> shift;
  int64_t strip[C];  // the strip each column of the kernel reads
  for (int c = 0; c < C; ++c) strip[c] = up ? t + c / 2 + (c % 2) * up : t + c;
  const BVec low = _mm512_set1_epi8(0x0F);
  Vec acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = zero();
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t c0 = b / 4 * 4, nbc = min64(4, nblocks - c0), j = b - c0;
    const int64_t lo_off = c0 * 32 + j * 16, hi_off = c0 * 32 + nbc * 16 + j * 16;  // Q8Rows' layout
    BVec dot[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) dot[r][c] = zero_b();
    // Decode streams W from memory once: fetch each strip's codes kAhead runs ahead (past a strip's end that is the
    // next strip's start, read next), and its scales and mins once a group.
    constexpr int64_t runs_ahead = R <= 2 ? kAheadDecode : kAhead;
    auto fetch = [](const void* p) {
      if constexpr (R <= 2)  // decode: into L2, far ahead
        prefetch_l2(p);
      else
        prefetch(p);
    };
    for (int c = 0; c < C; ++c) {
      const uint8_t* ahead = codes + (strip[c] * nblocks + b + runs_ahead) * 256;
      for (int l = 0; l < 4; ++l) fetch(ahead + 64 * l);
      const int64_t ga = strip[c] * G + ((b + runs_ahead) >> shift);  // a group's 16 scales (mins): one line
      fetch(scales + ga * 16);
      fetch(mins + ga * 16);
    }
    for (int u = 0; u < 4; ++u) {
      BVec wl[C], wh[C];
      for (int c = 0; c < C; ++c) {
        const BVec v = _mm512_loadu_si512(codes + (strip[c] * nblocks + b) * 256 + u * 64);
        wl[c] = _mm512_and_si512(v, low);
        wh[c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      }
      for (int r = 0; r < R; ++r) {
        const int8_t* qr = x.q + (m + r) * x.ldq;  // inputs 4u..4u+3 and 16+4u..16+4u+3 of the run
        for (int c = 0; c < C; ++c)
          dot[r][c] = dot4_at(dot4_at(dot[r][c], wl[c], qr + lo_off + 4 * u), wh[c], qr + hi_off + 4 * u);
      }
    }
    const int64_t g = b >> shift;
    Vec sv[C];
    for (int c = 0; c < C; ++c) sv[c] = load_f16(scales + (strip[c] * G + g) * 16);
    for (int r = 0; r < R; ++r) {
      const Vec d = set1(x.d[(m + r) * nblocks + b]);
      for (int c = 0; c < C; ++c) acc[r][c] = fmadd(to_float(dot[r][c]), mul(sv[c], d), acc[r][c]);
    }
  }
  for (int64_t g = 0; g < G; ++g)
    for (int c = 0; c < C; ++c) {
      const Vec mv = load_f16(mins + (strip[c] * G + g) * 16);
      for (int r = 0; r < R; ++r) acc[r][c] = fmadd(mv, set1(x.xs[(m + r) * G + g]), acc[r][c]);
    }
  for (int r = 0; r < R; ++r) {
    if (up) {
      for (int c = 0; c + 1 < C; c += 2)  // (+ 0: the unfused product's values, -0 included)
        store(y + (m + r) * ldy + strip[c] * 16, silu_mul_ps(add(acc[r][c], zero()), add(acc[r][c + 1], zero())));
      continue;
    }
    for (int c = 0; c < C; ++c)
      store(y + (m + r) * ldy + strip[c] * 16, add(acc[r][c], bias ? load(bias + strip[c] * 16) : zero()));
  }
}

// Rows [m0, m1) against the C strips from t: blocks of 4 rows, then the 1-3 left.
template <int C>
inline void il_strips(const Q8Rows& x, int64_t K, const uint8_t* codes, const uint16_t* scales, const uint16_t* mins,
                      int shift, const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t,
                      int64_t up) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) il_kernel<4, C>(x, m, K, codes, scales, mins, shift, bias, y, ldy, t, up);
  if (m1 - m == 3) il_kernel<3, C>(x, m, K, codes, scales, mins, shift, bias, y, ldy, t, up);
  if (m1 - m == 2) il_kernel<2, C>(x, m, K, codes, scales, mins, shift, bias, y, ldy, t, up);
  if (m1 - m == 1) il_kernel<1, C>(x, m, K, codes, scales, mins, shift, bias, y, ldy, t, up);
}

inline void il_tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const uint16_t* scales, const uint16_t* mins,
                    int group_size, const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0,
                    int64_t t1, int64_t up) {
  const int shift = group_size == 32 ? 0 : group_size == 64 ? 1 : 2;
  int64_t t = t0;
  if (up) {  // gate/up pairs: 2 pairs at once for decode's 1-2 rows, else 1
    if (m1 - m0 <= 2)
      for (; t + 2 <= t1; t += 2) il_strips<4>(x, K, codes, scales, mins, shift, nullptr, y, ldy, m0, m1, t, up);
    for (; t < t1; ++t) il_strips<2>(x, K, codes, scales, mins, shift, nullptr, y, ldy, m0, m1, t, up);
    return;
  }
  if (m1 - m0 <= 2)  // decode of 1-2 rows: more strips at once, more independent loads in flight
    for (; t + 4 <= t1; t += 4) il_strips<4>(x, K, codes, scales, mins, shift, bias, y, ldy, m0, m1, t, 0);
  for (; t + 2 <= t1; t += 2) il_strips<2>(x, K, codes, scales, mins, shift, bias, y, ldy, m0, m1, t, 0);
  if (t < t1) il_strips<1>(x, K, codes, scales, mins, shift, bias, y, ldy, m0, m1, t, 0);
}

}  // namespace
