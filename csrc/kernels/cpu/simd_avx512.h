// The vector API of simd_avx2.h at 16 fp32 lanes (AVX-512 F + BW + VL + DQ), for the
// width-generic kernels (*_simd.inl). Included only by *_avx512.cpp and *_amx.cpp (see simd_avx2.h for
// why everything lives in an unnamed namespace).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace lmrt::cpu::avx512 {
namespace {

constexpr int kLanes = 16;
using Vec = __m512;    // kLanes fp32
using IVec = __m512i;  // kLanes int32
// The last r < kLanes elements of a row, as a mask register.
using Tail = __mmask16;
inline Tail tail_mask(int r) { return static_cast<__mmask16>((1u << r) - 1u); }

inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec set1(float v) { return _mm512_set1_ps(v); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c, one rounding
inline void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
// Into L2 only (prefetcht1): for streams read once from memory, far ahead (an L1 prefetch holds one of its few
// miss buffers until the line arrives).
inline void prefetch_l2(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }

// Unaligned loads of kLanes elements as fp32.
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
// bf16 -> fp32 in registers: widen to 32 bits and shift into the high half.
inline Vec load(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
// int8 -> fp32 (exact).
inline Vec load(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }

// Tails: loads give the elements selected by m, zero elsewhere, so a tail is one more
// full-width FMA; store_tail writes only those.
inline Vec load_tail(const float* p, Tail m) { return _mm512_maskz_loadu_ps(m, p); }
inline Vec load_tail(const uint16_t* p, Tail m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline Vec load_tail(const int8_t* p, Tail m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
}
inline void store_tail(float* p, Tail m, Vec v) { _mm512_mask_storeu_ps(p, m, v); }

inline float load1(const float* p) { return *p; }
// IEEE half -> fp32 (F16C, exact).
inline float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
inline float load1(const uint16_t* p) {
  return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(static_cast<int>(*p) << 16)));
}

// 4-bit codes: kLanes bytes zero-extended into int32 lanes, then either nibble as fp32.
inline IVec widen_u8(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline Vec bytes_f32(IVec b) { return _mm512_cvtepi32_ps(b); }
inline Vec low_nibbles(IVec b) { return _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(0x0F))); }
inline Vec high_nibbles(IVec b) { return _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4)); }
// A group's 16 weight values, w(j) = fma(float(j), scale, min) for codes j = 0..15: here one vector
// (lane j), from which a permute picks each lane's weight by its code (the permute reads the low 4
// bits of each int32 lane, so the low nibble needs no mask). The same bits as the fma per weight.
using W4Table = Vec;
inline W4Table w4_table(float scale, float min) {
  const Vec j = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return _mm512_fmadd_ps(j, _mm512_set1_ps(scale), _mm512_set1_ps(min));
}
inline Vec w4_low(IVec b, W4Table t) { return _mm512_permutexvar_ps(b, t); }
inline Vec w4_high(IVec b, W4Table t) { return _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), t); }

// The one horizontal sum: a fixed pairing of lanes.
inline float hsum(Vec v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// out[0..3]: the sums of a, b, c and d, four at once (the attention scores of four keys). Every slot takes the
// same fixed pairing of its lanes (not hsum's), so a sum's bits do not depend on its slot or its neighbours.
inline void hsum4(Vec a, Vec b, Vec c, Vec d, float* out) {
  const Vec ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));  // per 128 bits: a02 b02 a13 b13
  const Vec cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const Vec lo = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd)));
  const Vec hi = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd)));
  const Vec s = _mm512_add_ps(lo, hi);  // per 128 bits: a b c d
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

// kLanes IEEE halves -> fp32 (F16C, exact).
inline Vec load_f16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline Vec max_lanes(Vec a, Vec b) { return _mm512_max_ps(a, b); }
inline float hmax(Vec v) { return _mm512_reduce_max_ps(v); }

// ---- Beyond the shared vector API (but exp_ps, which simd_avx2.h has too): the AVX-512 files of the
// bf16 tile paths use these.

// fp32 -> bf16 in the low halves of the int32 lanes: the bits of f32_to_bf16_bits (bf16.h), round
// to nearest even, a NaN stays a quiet NaN.
inline IVec round_bf16(Vec x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
}

// round_bf16 for values known to be finite (no NaN fix-up): 4 fewer instructions.
inline IVec round_bf16_finite(Vec x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  return _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
}

// r[n] holds row n's 16 pairs (32-bit words); afterwards r[p] holds pair p of rows 0..15.
inline void transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {  // within 128-bit lanes: words of row pairs interleaved
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + c], lane l: word 4l + c of rows 4i..4i+3
    u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // a 4 x 4 transpose of 128-bit lanes across u[c], u[4 + c], u[8 + c], u[12 + c]
    const __m512i x0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), x1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
    const __m512i x2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
    const __m512i x3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
    r[c] = _mm512_shuffle_i32x4(x0, x2, 0x88);
    r[4 + c] = _mm512_shuffle_i32x4(x0, x2, 0xDD);
    r[8 + c] = _mm512_shuffle_i32x4(x1, x3, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(x1, x3, 0xDD);
  }
}

// The tile packers' loops (contracts of tile_pack16 / tile_pack16_w4 in isa_kernels.h), written once
// for the AVX-512 F file and the AMX-host file: pairs(lo, hi) turns 32 fp32 weights (lo = elements
// 0..15, hi = 16..31) into 16 bf16 pairs (word p = elements 2p, 2p + 1).
template <class T, class Pairs>  // T: float, or int8_t (exact in bf16)
inline void pack16_rows(const T* w, int64_t ldw, int64_t num_rows, int64_t K, uint16_t* out, Pairs pairs) {
  const int64_t steps = (K + 31) / 32;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t k0 = s * 32, left = K - k0;
    const Tail lo = left >= 16 ? Tail(0xffff) : tail_mask(static_cast<int>(left));
    const Tail hi = left >= 32 ? Tail(0xffff) : left <= 16 ? Tail(0) : tail_mask(static_cast<int>(left - 16));
    __m512i r[16];
    for (int n = 0; n < 16; ++n) {
      const T* row = w + n * ldw + k0;
      if (n < num_rows) prefetch(row + 512 / sizeof(T));  // 16 row streams: the hardware prefetchers lose them
      r[n] = n < num_rows ? pairs(load_tail(row, lo), load_tail(row + 16, hi)) : _mm512_setzero_si512();
    }
    transpose16(r);
    for (int p = 0; p < 16; ++p) _mm512_storeu_si512(out + (s * 16 + p) * 32, r[p]);
  }
}

// One 32-input step of 16 outputs of 4-bit weights into the B layout, from lane vectors: v[u] holds, in lane n,
// output n's code bytes 4u..4u+3 (byte b: input 4u + b in its low nibble, 4u + b + 16 in its high one), so the
// bytes 2h, 2h + 1 of every lane are pair row 2u + h (low nibbles) and 8 + 2u + h (high nibbles), one lane per
// output: each row is two codes per lane, dequantised with the lanes' scales sv and mins mv (fma(code, scale, min),
// w4_table's bits) and joined by lane_pairs(even inputs, odd inputs) into 16 bf16 pairs. o: the step's [16, 32].
template <class LanePairs>
inline void w4_lanes_step(const __m512i v[4], Vec sv, Vec mv, uint16_t* o, LanePairs lane_pairs) {
  const __m512i nib = _mm512_set1_epi32(0x0F0F0F0F), byte = _mm512_set1_epi32(0xFF);
  const auto w = [&](__m512i c) { return _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), sv, mv); };
  for (int u = 0; u < 4; ++u) {
    const __m512i halves[2] = {_mm512_and_si512(v[u], nib), _mm512_and_si512(_mm512_srli_epi32(v[u], 4), nib)};
    for (int x = 0; x < 2; ++x) {  // low nibbles: rows 2u + h; high nibbles: rows 8 + 2u + h
      const __m512i c = halves[x];
      const __m512i r0 = lane_pairs(w(_mm512_and_si512(c, byte)), w(_mm512_and_si512(_mm512_srli_epi32(c, 8), byte)));
      const __m512i r1 = lane_pairs(w(_mm512_and_si512(_mm512_srli_epi32(c, 16), byte)), w(_mm512_srli_epi32(c, 24)));
      _mm512_storeu_si512(o + (8 * x + 2 * u) * 32, r0);
      _mm512_storeu_si512(o + (8 * x + 2 * u + 1) * 32, r1);
    }
  }
}

// tile_pack16_w4 (rows r0.. of the row layout): the rows' code bytes transposed as they come (16 rows x 4 steps of
// 16 bytes: one 16 x 16 transpose of 32-bit words gives every step's lane vectors, output n in lane n), then
// w4_lanes_step. Rows past num_rows read nothing and get scale = min = 0: zeros.
template <class LanePairs>
inline void pack16_w4_rows(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K,
                           int64_t r0, int64_t num_rows, uint16_t* out, LanePairs lane_pairs) {
  const int64_t steps = K / 32, G = K / group_size;  // K is a multiple of group_size >= 32
  const __mmask16 live = num_rows >= 16 ? Tail(0xffff) : tail_mask(static_cast<int>(std::max<int64_t>(num_rows, 0)));
  const __m512i lane_offsets =  // lane n: row n's scales
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int>(G)));
  Vec sv = _mm512_setzero_ps(), mv = _mm512_setzero_ps();
  int64_t group = -1;
  for (int64_t s0 = 0; s0 < steps; s0 += 4) {
    const int n_steps = static_cast<int>(std::min<int64_t>(4, steps - s0));
    const Tail words = n_steps == 4 ? Tail(0xffff) : tail_mask(4 * n_steps);
    __m512i r[16];  // r[n]: row n's code bytes of steps s0.., 4 words a step
    for (int n = 0; n < 16; ++n) {
      if (n >= num_rows) {
        r[n] = _mm512_setzero_si512();
        continue;
      }
      const uint8_t* p = codes + (r0 + n) * (K / 2) + s0 * 16;
      prefetch(p + 128);  // 16 rows are 16 streams, too many for the hardware prefetchers: 2 lines ahead
      r[n] = _mm512_maskz_loadu_epi32(words, p);
    }
    transpose16(r);  // r[4 i + u], lane n: row n's word u of step s0 + i
    for (int i = 0; i < n_steps; ++i) {
      const int64_t g = (s0 + i) * 32 / group_size;
      if (g != group) {
        sv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, lane_offsets, scales + r0 * G + g, 4);
        mv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, lane_offsets, mins + r0 * G + g, 4);
        group = g;
      }
      w4_lanes_step(r + 4 * i, sv, mv, out + (s0 + i) * 16 * 32, lane_pairs);
    }
  }
}

// The same for strip t of interleaved weights (W4Interleaved), with no transpose: a run's 4 vectors are already
// w4_lanes_step's lane vectors.
template <class LanePairs>
inline void pack16_w4il_strip(const uint8_t* codes, const uint16_t* scales, const uint16_t* mins, int group_size,
                              int64_t K, int64_t t, uint16_t* out, LanePairs lane_pairs) {
  const int64_t steps = K / 32, G = K / group_size;
  const uint8_t* strip = codes + t * steps * 256;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t g = s * 32 / group_size;
    prefetch(strip + (s + 4) * 256);
    prefetch(strip + (s + 4) * 256 + 128);
    const __m512i v[4] = {_mm512_loadu_si512(strip + s * 256), _mm512_loadu_si512(strip + s * 256 + 64),
                          _mm512_loadu_si512(strip + s * 256 + 128), _mm512_loadu_si512(strip + s * 256 + 192)};
    w4_lanes_step(v, load_f16(scales + (t * G + g) * 16), load_f16(mins + (t * G + g) * 16), out + s * 16 * 32,
                  lane_pairs);
  }
}

// e^x in fp32, within 2 ulp of the exact value over the normal range (Cephes' expf: x = n ln2 + r
// with |r| <= ln2 / 2, a degree-7 polynomial for e^r, then scaled by 2^n); 0 for x <= -87.34
// (where e^x is at most a denormal, which the tile unit flushes anyway).
inline Vec exp_ps(Vec x) {
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33654f), _CMP_LT_OQ);
  x = _mm512_min_ps(x, _mm512_set1_ps(88.72283f));
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.33654f));
  const Vec n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  Vec r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  Vec p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), _mm512_scalef_ps(p, n));
}

// 2^y in fp32 within 2^-22 relative (a degree-5 fit of 2^f on |f| <= 1/2, then scaled by 2^n): about half exp_ps's
// work, for values rounded to bf16 next (2^-9), the tile path's probabilities and silu(gate) * up. y is clamped to
// [-150, 127] first: 0 below (a NaN y too), at most 2^127 above.
inline Vec exp2_ps(Vec y) {
  y = _mm512_max_ps(_mm512_min_ps(y, _mm512_set1_ps(127.0f)), _mm512_set1_ps(-150.0f));
  const Vec n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const Vec f = _mm512_sub_ps(y, n);  // exact
  Vec p = _mm512_set1_ps(1.327647129e-3f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.675541893e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550713092e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402212024e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931469440e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.000000119e+0f));
  return _mm512_scalef_ps(p, n);
}

// 2^y for a result rounded to bf16 next (2^-9), where y is finite and at most 127 (the tile softmax's y, at most
// kSoftmaxSlack): a degree-3 fit of 2^f on |f| <= 1/2 (7.5e-5 relative, 2^-13.7), no clamps; y below -150 gives 0.
inline Vec exp2_bf16_ps(Vec y) {
  const Vec n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const Vec f = _mm512_sub_ps(y, n);  // exact
  Vec p = _mm512_set1_ps(5.5171653628e-2f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4261115491e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9326096773e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.9992805719e-1f));
  return _mm512_scalef_ps(p, n);
}

constexpr float kLog2e = 1.44269504088896341f;

// silu(g) * u = g / (1 + e^-g) * u. e^-g past fp32's range saturates near 3.4e38 (g / that is the limit 0 within
// 1e-36), and below -87.3 gives 0 (silu(g) = g). 1 / (1 + e) by rcp14 and one Newton step (relative error ~2^-27,
// a few times cheaper than vdivps). silu_mul_row and the 4-bit products' fused gate/up epilogue both use it.
inline Vec silu_mul_ps(Vec g, Vec u) {
  const Vec den = _mm512_add_ps(exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g)), _mm512_set1_ps(1.0f));
  Vec r = _mm512_rcp14_ps(den);
  r = _mm512_mul_ps(r, _mm512_fnmadd_ps(den, r, _mm512_set1_ps(2.0f)));
  return _mm512_mul_ps(_mm512_mul_ps(g, r), u);
}

// silu_mul_ps for a result rounded to bf16 next: e^-g as exp2_bf16_ps(-g log2 e) (7.5e-5 relative) and 1 / (1 + e)
// as rcp14 alone (2^-14 relative), both far below bf16's 2^-9. No clamps: -g log2 e past 128 gives e = inf, so
// 1 / (1 + e) = 0 and silu(g) = -0 (the limit, within 1e-36), and below -150 gives e = 0 (silu(g) = g).
inline Vec silu_mul_bf16_ps(Vec g, Vec u) {
  const Vec den = _mm512_add_ps(exp2_bf16_ps(_mm512_mul_ps(g, _mm512_set1_ps(-kLog2e))), _mm512_set1_ps(1.0f));
  return _mm512_mul_ps(_mm512_mul_ps(g, _mm512_rcp14_ps(den)), u);
}

}  // namespace
}  // namespace lmrt::cpu::avx512
