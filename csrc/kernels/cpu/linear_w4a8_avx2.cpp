// AVX2 4-bit x int8 product: linear_w4a8_simd.inl at 8 lanes, the int8 dot products by maddubs.
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx2.h"

namespace lmrt::cpu::avx2 {
namespace {

using BVec = __m256i;  // 32 bytes, or kLanes int32

inline BVec zero_b() { return _mm256_setzero_si256(); }
// nb blocks of 16 bytes (nb <= 2), zeros beyond.
inline BVec load_blocks(const void* p, int nb) {
  if (nb == 2) return _mm256_loadu_si256(static_cast<const __m256i*>(p));
  return _mm256_zextsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(p)));
}
inline void split_nibbles(BVec c, BVec& lo, BVec& hi) {
  const BVec m = _mm256_set1_epi8(0x0F);
  lo = _mm256_and_si256(c, m);
  hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), m);
}
// u (0..15) times s (-127..127) in byte pairs fits int16 without saturation (2 * 15 * 127).
inline BVec dot4(BVec acc, BVec u, BVec s) {
  const BVec pairs = _mm256_maddubs_epi16(u, s);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}
inline Vec to_float(BVec v) { return _mm256_cvtepi32_ps(v); }
inline Vec spread(Vec v, BVec idx) { return _mm256_permutevar8x32_ps(v, idx); }
inline BVec lane_index(const int32_t* idx) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(idx)); }
inline float amax32(const float* x) {
  const Vec sign = _mm256_set1_ps(-0.0f);
  Vec m = _mm256_andnot_ps(sign, load(x));
  for (int i = 8; i < 32; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, load(x + i)));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}
// x[0..16) * id rounded (half even) to int8 codes at out; their int32 values' lane sums (a + b) back.
inline __m256i codes16(const float* x, float id, int8_t* out) {
  const Vec iv = _mm256_set1_ps(id);
  const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(load(x), iv));  // round half even (MXCSR default)
  const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(load(x + 8), iv));
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);  // a0..7 b0..7 as int16
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                   _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
  return _mm256_add_epi32(a, b);
}
inline int quant16(const float* x, float id, int8_t* out) {
  const __m256i ab = codes16(x, id, out);
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(ab), _mm256_extracti128_si256(ab, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// Lane i of the result = op over the 8 lanes of v[i] (v is overwritten): three halving steps across the registers
// (128-bit halves, pairs, lanes), then one permute (the steps leave sources 0, 2, 4, 6, 1, 3, 5, 7 in lane order).
template <class Op>
inline __m256 reduce8(__m256* v, Op op) {
  for (int k = 0; k < 4; ++k)
    v[k] =
        op(_mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x20), _mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x31));
  for (int k = 0; k < 2; ++k)
    v[k] = op(_mm256_shuffle_ps(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
              _mm256_shuffle_ps(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 r = op(_mm256_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                      _mm256_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// 8 runs of 32 inputs at once (q8_quantize's step where 8 whole runs from a chunk boundary remain), as the AVX-512
// quant_runs16 does 16: x the runs' 256 inputs, q their 256 code bytes (2 whole chunks of Q8Rows' layout), d each
// run's scale, xs the 8 / bpg group sums of d * float(code sum) (the runs start a group); the same operations per
// value as amax32 and quant16 and the same fmas as quantize's scalar loop, so the same bits.
inline void quant_runs8(const float* x, int8_t* q, float* d, int bpg, float* xs) {
  const Vec sign = _mm256_set1_ps(-0.0f);
  __m256 v[8];
  for (int i = 0; i < 8; ++i) {
    Vec m = _mm256_andnot_ps(sign, load(x + 32 * i));
    for (int k = 8; k < 32; k += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, load(x + 32 * i + k)));
    v[i] = m;
  }
  const Vec db =
      _mm256_div_ps(reduce8(v, [](__m256 a, __m256 b) { return _mm256_max_ps(a, b); }), _mm256_set1_ps(127.0f));
  alignas(32) float id[8];  // 1 / d, 0 where d = 0 (its codes 0)
  _mm256_store_ps(
      id, _mm256_and_ps(_mm256_cmp_ps(db, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_div_ps(_mm256_set1_ps(1.0f), db)));
  _mm256_storeu_ps(d, db);
  for (int i = 0; i < 8; ++i) {
    int8_t* out = q + (i / 4) * 128 + (i % 4) * 16;  // chunk i / 4: the 4 runs' inputs 0..15, then their 16..31
    v[i] = _mm256_castsi256_ps(
        _mm256_add_epi32(codes16(x + 32 * i, id[i], out), codes16(x + 32 * i + 16, id[i], out + 64)));
  }
  const auto add = [](__m256 a, __m256 b) {
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
  };
  const Vec sum = _mm256_cvtepi32_ps(_mm256_castps_si256(reduce8(v, add)));
  if (bpg == 1) {
    _mm256_storeu_ps(xs, _mm256_fmadd_ps(db, sum, _mm256_setzero_ps()));
    return;
  }
  // group g's runs are lanes g * bpg + j: lane g of a gather at g * bpg + j, for j = 0 .. bpg - 1 in turn (lanes
  // from 8 / bpg on are not stored)
  __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(bpg));
  Vec group = _mm256_setzero_ps();
  for (int j = 0; j < bpg; ++j, idx = _mm256_add_epi32(idx, _mm256_set1_epi32(1)))
    group = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(db, idx), _mm256_permutevar8x32_ps(sum, idx), group);
  alignas(32) float g[8];
  _mm256_store_ps(g, group);
  for (int i = 0; i < 8 / bpg; ++i) xs[i] = g[i];
}

}  // namespace

#include "kernels/cpu/linear_w4a8_simd.inl"

void q8_quantize(const float* x, int64_t ldx, int64_t K, int group_size, int64_t m0, int64_t m1, int8_t* q, int64_t ldq,
                 float* d, float* xs) {
  quantize<8>(x, ldx, K, group_size, m0, m1, q, ldq, d, xs, quant_runs8);
}

void w4a8_tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const float* scales, const float* mins, int group_size,
               const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  // Blocks of at most 2 rows x 2 columns (1 x 4 for a last odd row): 4 accumulators, the rows' codes and d, W's
  // nibbles and scales in the 16 ymm registers; 4 rows would spill.
  for (int64_t m = m0; m < m1; m += 2)
    tile<1, 1, 2, 4>(x, K, codes, scales, mins, group_size, bias, y, ldy, m, m + 2 < m1 ? m + 2 : m1, n0, n1);
}

}  // namespace lmrt::cpu::avx2
