// The int8 products over interleaved weights on AMX-INT8 tiles (compiled with -mamx-tile -mamx-int8 and AVX-512;
// runs only where amx_int8_available()): linear_w4a8_il's and linear_i8a8_il's tiles, the same bits as
// scalar::w4a8_il_tile / scalar::i8a8_il_tile. Each run of 32 inputs of 16 rows x 16 outputs is one tile product
// (the exact int32 dots: tdpbsud, signed activations x the 4-bit codes as unsigned bytes; tdpbssd for int8
// weights); its 16 x 16 dots go through memory to the vector units, which add them into fp32 accumulators in the
// scalar path's order (acc = fma(float(dot), scale * d, acc) per run, then the mins per group, then the bias).
// The tile unit runs two runs ahead of the vector units (RunDots).
#include <immintrin.h>

#include <vector>

#include "kernels/cpu/amx_tiles.h"
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::amx {

namespace {

using namespace lmrt::cpu::avx512;  // simd_avx512.h's vector API

// tmm0-1: C (16 x 16 int32), tmm2-3: A (16 rows x 32 activations: one run), tmm4-5: B (8 rows x 16 outputs x 4
// inputs: the same run); set P of the two is tmm{P, 2 + P, 4 + P}.
void configure_int8() {
  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int p = 0; p < 2; ++p) {
    cfg.rows[p] = 16;
    cfg.colsb[p] = 64;
    cfg.rows[2 + p] = 16;
    cfg.colsb[2 + p] = 32;
    cfg.rows[4 + p] = 8;
    cfg.colsb[4 + p] = 64;
  }
  load_tile_config(cfg);
}

// Configures this thread's tiles for the call's lifetime, releases them after.
struct TileScope {
  TileScope() { configure_int8(); }
  ~TileScope() { _tile_release(); }
};

// A thread's unpacked weights: runs of B tiles (8 rows x 64 bytes each), grown once and reused.
thread_local std::vector<uint8_t> t_unpacked;

uint8_t* unpacked(int64_t bytes) {
  if (static_cast<int64_t>(t_unpacked.size()) < bytes + 64) t_unpacked.resize(bytes + 64);
  const uintptr_t p = reinterpret_cast<uintptr_t>(t_unpacked.data());
  return reinterpret_cast<uint8_t*>((p + 63) / 64 * 64);
}

// Strip t's codes (W4Interleaved) as B tiles, one per run: rows 0-3 the low nibbles of quads 0-3 (inputs 4u..4u+3
// of the run), rows 4-7 their high nibbles (inputs 16 + 4u..): row r holds inputs 4r..4r+3 of all 16 outputs,
// which is the order of the run's activations in Q8Rows::qn.
void unpack_strip(const uint8_t* codes, int64_t nblocks, int64_t t, uint8_t* out) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  const uint8_t* src = codes + t * nblocks * 256;
  for (int64_t b = 0; b < nblocks; ++b)
    for (int u = 0; u < 4; ++u) {
      const __m512i v = _mm512_loadu_si512(src + b * 256 + u * 64);
      _mm512_store_si512(out + b * 512 + u * 64, _mm512_and_si512(v, low));
      _mm512_store_si512(out + b * 512 + (4 + u) * 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), low));
    }
}

// One row tile's dots, run by run. A tile store holds back the loads after it until its product is done and its
// data written, so the pipeline runs two runs ahead: in the step for run r the tile unit computes run r + 2 (tile
// set r % 2, free since its run was stored) while the vector units read run r's dots (stored two steps before),
// then run r + 2's dots are stored (buffers by r % 3).
template <bool kSignedB>
struct RunDots {
  const int8_t* a;    // the row tile's first activation row (Q8Rows::qn), lda K bytes
  int64_t lda;        // bytes
  const uint8_t* b;   // run 0's B tile; run r at b + r * b_step
  int64_t b_step;     // bytes between runs' B tiles
  int32_t (*c)[256];  // [3][16 x 16]: run r's dots in c[r % 3]
  int64_t n;          // runs
// gcc's tile intrinsics take their tile numbers as literal text (macros), so the two sets are spelled out.
#define LMRT_RUN_PRODUCT(P, A, B)     \
  _tile_zero(P);                      \
  _tile_loadd(A, a + r * 32, lda);    \
  _tile_loadd(B, b + r * b_step, 64); \
  if constexpr (kSignedB)             \
    _tile_dpbssd(P, A, B);            \
  else                                \
    _tile_dpbsud(P, A, B)
  void product(int64_t r) const {
    if (r & 1) {
      LMRT_RUN_PRODUCT(1, 3, 5);
    } else {
      LMRT_RUN_PRODUCT(0, 2, 4);
    }
  }
#undef LMRT_RUN_PRODUCT
  void store(int64_t r) const {
    if (r & 1)
      _tile_stored(1, c[r % 3], 64);
    else
      _tile_stored(0, c[r % 3], 64);
  }
  // Before the loop over runs: runs 0 and 1 computed and stored.
  void start() const {
    for (int64_t r = 0; r < 2 && r < n; ++r) {
      product(r);
      store(r);
    }
  }
  // Run r + 2 onto the tile unit, before the vector units take run r's dots.
  void ahead(int64_t r) const {
    if (r + 2 < n) product(r + 2);
  }
  const int32_t* dots(int64_t r) const { return c[r % 3]; }
  // After run r's dots were read: store run r + 2's.
  void behind(int64_t r) const {
    if (r + 2 < n) store(r + 2);
  }
};

// The activation scales of rows [m0, m1) by row tile and run: dt[(j * nblocks + b) * 16 + i] = x.d[m0 + 16 j + i, b]
// (one base pointer for the 16 broadcasts of a run, instead of 16 row pointers the registers cannot hold beside the
// accumulators). Rows past M read as Q8Rows' zeros.
thread_local std::vector<float> t_scales;

const float* run_scales(const Q8Rows& x, int64_t nblocks, int64_t m0, int64_t m1) {
  const int64_t tiles = (m1 - m0 + 15) / 16;
  if (static_cast<int64_t>(t_scales.size()) < tiles * nblocks * 16) t_scales.resize(tiles * nblocks * 16);
  float* dt = t_scales.data();
  for (int64_t j = 0; j < tiles; ++j)
    for (int64_t i = 0; i < 16; ++i) {
      const float* d = x.d + (m0 + 16 * j + i) * nblocks;
      for (int64_t b = 0; b < nblocks; ++b) dt[(j * nblocks + b) * 16 + i] = d[b];
    }
  return dt;
}

// The fp32 sums of one 16-row tile (rows m..m + 15 of x: Q8Rows' rows past M read as zeros) against strip t, whose
// B tiles are bt (nblocks of them, 512 bytes apart), in scalar::w4a8_il_tile's order; out[i] for row m + i.
// dt: the row tile's part of run_scales.
inline void w4_strip_rows(const Q8Rows& x, int64_t K, const uint8_t* bt, const float* dt, const uint16_t* scales,
                          const uint16_t* mins, int shift, int64_t m, int64_t t, Vec out[16]) {
  const int64_t nblocks = K / 32, G = nblocks >> shift;
  alignas(64) int32_t c[3][256];
  const RunDots<false> dots{x.qn + m * K, K, bt, 512, c, nblocks};
  Vec acc[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = zero();
  dots.start();
  for (int64_t b = 0; b < nblocks; ++b) {
    dots.ahead(b);
    const int32_t* dot = dots.dots(b);
    const Vec sv = load_f16(scales + (t * G + (b >> shift)) * 16);
    const float* d = dt + b * 16;
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
      acc[i] = fmadd(_mm512_cvtepi32_ps(_mm512_load_si512(dot + 16 * i)), mul(sv, set1(d[i])), acc[i]);
    dots.behind(b);
  }
  for (int64_t g = 0; g < G; ++g) {
    const Vec mv = load_f16(mins + (t * G + g) * 16);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = fmadd(mv, set1(x.xs[(m + i) * G + g]), acc[i]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) out[i] = acc[i];
}

}  // namespace

void w4a8_il_tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const uint16_t* scales, const uint16_t* mins,
                  int group_size, const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0,
                  int64_t t1, int64_t up) {
  const int shift = group_size == 32 ? 0 : group_size == 64 ? 1 : 2;
  const int64_t nblocks = K / 32, strip_bytes = nblocks * 512;
  uint8_t* bt = unpacked(up ? 2 * strip_bytes : strip_bytes);
  const float* dts = run_scales(x, nblocks, m0, m1);
  TileScope tiles;
  for (int64_t t = t0; t < t1; ++t) {
    unpack_strip(codes, nblocks, t, bt);
    if (up) unpack_strip(codes, nblocks, t + up, bt + strip_bytes);
    for (int64_t m = m0; m < m1; m += 16) {  // m0 a multiple of 16 (Q8Rows::qn's tiles)
      const int64_t rows = m1 - m < 16 ? m1 - m : 16;
      Vec acc[16];
      const float* dt = dts + (m - m0) * nblocks;
      w4_strip_rows(x, K, bt, dt, scales, mins, shift, m, t, acc);
      if (up) {  // the gates above, now their ups; + 0 as the unfused product's values (-0 included)
        alignas(64) float gate[16][16];
        for (int i = 0; i < 16; ++i) _mm512_store_ps(gate[i], acc[i]);
        w4_strip_rows(x, K, bt + strip_bytes, dt, scales, mins, shift, m, t + up, acc);
        for (int i = 0; i < rows; ++i)
          store(y + (m + i) * ldy + t * 16, silu_mul_ps(add(_mm512_load_ps(gate[i]), zero()), add(acc[i], zero())));
        continue;
      }
      const Vec bv = bias ? load(bias + t * 16) : zero();
      for (int i = 0; i < rows; ++i) store(y + (m + i) * ldy + t * 16, add(acc[i], bv));
    }
  }
}

void i8a8_il_tile(const Q8Rows& x, int64_t K, const int8_t* q, const int32_t* offsets, const float* scales,
                  const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
  const int64_t nblocks = K / 32;
  TileScope tiles;
  alignas(64) int32_t c[3][256];
  const float* dts = run_scales(x, nblocks, m0, m1);
  for (int64_t t = t0; t < t1; ++t) {
    // I8Interleaved's q is already B tiles: quads 8b..8b + 7 of strip t are run b's 8 rows of 64 bytes
    const uint8_t* bt = reinterpret_cast<const uint8_t*>(q + t * (K / 4) * 64);
    const Vec sv = load(scales + t * 16), bv = bias ? load(bias + t * 16) : zero();
    for (int64_t m = m0; m < m1; m += 16) {
      const int64_t rows = m1 - m < 16 ? m1 - m : 16;
      const RunDots<true> dots{x.qn + m * K, K, bt, 512, c, nblocks};
      Vec acc[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) acc[i] = zero();
      const float* dt = dts + (m - m0) * nblocks;
      dots.start();
      for (int64_t b = 0; b < nblocks; ++b) {
        dots.ahead(b);
        const int32_t* dot = dots.dots(b);
        const float* d = dt + b * 16;
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i)
          acc[i] = fmadd(_mm512_cvtepi32_ps(_mm512_load_si512(dot + 16 * i)), set1(d[i]), acc[i]);
        dots.behind(b);
      }
      for (int i = 0; i < rows; ++i) {
        Vec v = mul(acc[i], sv);
        __asm__("" : "+v"(v));  // v rounded before the bias: the compiler would contract mul + add into an fma
        store(y + (m + i) * ldy + t * 16, bias ? add(v, bv) : v);
      }
    }
  }
}

namespace {

// linear_i8a8_il with Int16Rows activations: every tile 16 rows of 64 bytes. tmm0-3 C (the high and low bytes' dots
// of strips t and t + 1), tmm4-5 A (16 rows x 64 inputs: high bytes, low bytes), tmm6-7 B (16 quads x 16 outputs x 4
// inputs: 64 inputs of strips t and t + 1, 1 KB each in I8Interleaved's q).
void configure_a16() {
  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int p = 0; p < 8; ++p) {
    cfg.rows[p] = 16;
    cfg.colsb[p] = 64;
  }
  load_tile_config(cfg);
}

struct A16TileScope {
  A16TileScope() { configure_a16(); }
  ~A16TileScope() { _tile_release(); }
};

// One row tile (rows m..m + 15) against strip t (and t + 1 where kPair): the dots over all of K stay in the tiles,
// then go through memory once to the vector units, which form y as scalar::i8a16_il_tile does.
template <bool kPair>
void a16_rows(const A16Rows& x, int64_t K, const uint8_t* b0, const __m512i* off, const float* scales,
              const float* bias, float* y, int64_t ldy, int64_t m, int64_t rows, int64_t t) {
  _tile_zero(0);
  _tile_zero(1);
  if constexpr (kPair) {
    _tile_zero(2);
    _tile_zero(3);
  }
  const uint8_t* hi = x.hi + m * K;
  const uint8_t* lo = x.lo + m * K;
  const uint8_t* b1 = b0 + K * 16;  // strip t + 1: (K / 4) quads of 64 bytes after strip t's
  for (int64_t s = 0; s < K / 64; ++s) {
    _tile_stream_loadd(4, hi + s * 64, K);
    _tile_loadd(6, b0 + s * 1024, 64);
    _tile_dpbusd(0, 4, 6);
    _tile_stream_loadd(5, lo + s * 64, K);
    _tile_dpbusd(1, 5, 6);
    if constexpr (kPair) {
      _tile_loadd(7, b1 + s * 1024, 64);
      _tile_dpbusd(2, 4, 7);
      _tile_dpbusd(3, 5, 7);
    }
  }
  alignas(64) int32_t c[4][256];
  _tile_stored(0, c[0], 64);
  _tile_stored(1, c[1], 64);
  if constexpr (kPair) {
    _tile_stored(2, c[2], 64);
    _tile_stored(3, c[3], 64);
  }
  const Vec k256 = set1(256.0f);
  for (int p = 0; p < (kPair ? 2 : 1); ++p) {
    const int64_t col = (t + p) * 16;
    const Vec sv = load(scales + col), bv = bias ? load(bias + col) : zero();
    for (int64_t i = 0; i < rows; ++i) {
      const __m512i h = _mm512_sub_epi32(_mm512_load_si512(c[2 * p] + 16 * i), off[p]);
      Vec v = fmadd(k256, _mm512_cvtepi32_ps(h), _mm512_cvtepi32_ps(_mm512_load_si512(c[2 * p + 1] + 16 * i)));
      v = mul(v, set1(x.alpha[m + i]));
      __asm__("" : "+v"(v));  // each product rounded on its own, as the scalar path's
      v = mul(v, sv);
      __asm__("" : "+v"(v));
      store(y + (m + i) * ldy + col, bias ? add(v, bv) : v);
    }
  }
}

}  // namespace

void i8a16_il_tile(const A16Rows& x, int64_t K, const int8_t* q, const int32_t* sums, const float* scales,
                   const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
  A16TileScope tiles;
  for (int64_t t = t0; t < t1; t += 2) {
    const bool pair = t + 1 < t1;
    const __m512i off[2] = {_mm512_loadu_si512(sums + t * 16),  // 128 * each output's sum of q
                            pair ? _mm512_loadu_si512(sums + (t + 1) * 16) : _mm512_setzero_si512()};
    const uint8_t* b0 = reinterpret_cast<const uint8_t*>(q + t * (K / 4) * 64);
    for (int64_t m = m0; m < m1; m += 16) {  // m0 a multiple of 16 (A16Rows' padding)
      const int64_t rows = m1 - m < 16 ? m1 - m : 16;
      if (pair)
        a16_rows<true>(x, K, b0, off, scales, bias, y, ldy, m, rows, t);
      else
        a16_rows<false>(x, K, b0, off, scales, bias, y, ldy, m, rows, t);
    }
  }
}

}  // namespace lmrt::cpu::amx
