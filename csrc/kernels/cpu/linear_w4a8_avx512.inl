// The int8 primitives of linear_w4a8_simd.inl at 16 lanes, but dot4 (maddubs or VNNI): included inside their
// namespace (and its unnamed namespace) by linear_w4a8_avx512.cpp and linear_w4a8_avx512vnni.cpp, after
// simd_avx512.h's vector API is visible; never elsewhere.

using BVec = __m512i;  // 64 bytes, or kLanes int32

inline BVec zero_b() { return _mm512_setzero_si512(); }
// nb blocks of 16 bytes (nb <= 4), zeros beyond (a masked load never faults past the end).
inline BVec load_blocks(const void* p, int nb) {
  if (nb == 4) return _mm512_loadu_si512(p);
  return _mm512_maskz_loadu_epi8(static_cast<__mmask64>((1ull << (16 * nb)) - 1), p);
}
inline void split_nibbles(BVec c, BVec& lo, BVec& hi) {
  const BVec m = _mm512_set1_epi8(0x0F);
  lo = _mm512_and_si512(c, m);
  hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), m);
}
inline Vec to_float(BVec v) { return _mm512_cvtepi32_ps(v); }
inline Vec spread(Vec v, BVec idx) { return _mm512_permutexvar_ps(idx, v); }
inline BVec lane_index(const int32_t* idx) { return _mm512_load_si512(idx); }
inline float amax32(const float* x) {
  return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(load(x)), _mm512_abs_ps(load(x + 16))));
}
inline int quant16(const float* x, float id, int8_t* out) {
  const __m512i a = _mm512_cvtps_epi32(_mm512_mul_ps(load(x), _mm512_set1_ps(id)));  // round half even
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtsepi32_epi8(a));
  return _mm512_reduce_add_epi32(a);
}

// Lane i of the result = op over the 16 lanes of v[i] (v is overwritten): four halving steps across the registers
// (256-bit halves, 128-bit quarters, pairs, lanes), 15 ops and 30 shuffles for all 16 instead of a horizontal
// reduction each, then one permute (the steps leave source 4j + L in lane 4L + j).
template <class Op>
inline __m512 reduce16(__m512* v, Op op) {
  for (int k = 0; k < 8; ++k)
    v[k] = op(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
              _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int k = 0; k < 4; ++k)
    v[k] = op(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(2, 0, 2, 0)),
              _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  for (int k = 0; k < 2; ++k)
    v[k] = op(_mm512_shuffle_ps(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
              _mm512_shuffle_ps(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 r = op(_mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                      _mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
}

// 16 runs of 32 inputs at once (q8_quantize's step where 16 whole runs from a chunk boundary remain): x the runs'
// 512 inputs, q their 512 code bytes (4 whole chunks of Q8Rows' layout), d each run's scale, xs the 16 / bpg group
// sums of d * float(code sum) (bpg runs a group, 1, 2 or 4; the runs start a group). The same operations per value
// as amax32 and quant16 (max is exact in any order; d, 1 / d and the codes as there) and the same fmas in the same
// order as quantize's scalar loop, so the same bits; the runs' maxima and sums are reduced across registers
// (reduce16), and the group sums formed in registers (the scalar loop read d and the sums back from the vector
// stores, a stalled forwarding each).
inline void quant_runs16(const float* x, int8_t* q, float* d, int bpg, float* xs) {
  __m512 v[16];
  for (int i = 0; i < 16; ++i)
    v[i] = _mm512_max_ps(_mm512_abs_ps(load(x + 32 * i)), _mm512_abs_ps(load(x + 32 * i + 16)));
  const Vec db = _mm512_div_ps(reduce16(v, [](__m512 a, __m512 b) { return _mm512_max_ps(a, b); }), set1(127.0f));
  alignas(64) float id[16];  // 1 / d, 0 where d = 0 (its codes 0)
  _mm512_store_ps(id, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(db, zero(), _CMP_GT_OQ), set1(1.0f), db));
  _mm512_storeu_ps(d, db);
  for (int i = 0; i < 16; ++i) {
    const Vec s = set1(id[i]);
    const __m512i lo = _mm512_cvtps_epi32(_mm512_mul_ps(load(x + 32 * i), s));  // round half even
    const __m512i hi = _mm512_cvtps_epi32(_mm512_mul_ps(load(x + 32 * i + 16), s));
    int8_t* out = q + (i / 4) * 128 + (i % 4) * 16;  // chunk i / 4: the 4 runs' inputs 0..15, then their 16..31
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtsepi32_epi8(lo));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 64), _mm512_cvtsepi32_epi8(hi));
    v[i] = _mm512_castsi512_ps(_mm512_add_epi32(lo, hi));
  }
  const auto add = [](__m512 a, __m512 b) {
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
  };
  const Vec sum = _mm512_cvtepi32_ps(_mm512_castps_si512(reduce16(v, add)));
  if (bpg == 1) {
    _mm512_storeu_ps(xs, _mm512_fmadd_ps(db, sum, zero()));
    return;
  }
  // group g's runs are lanes g * bpg + j: lane g of a gather at g * bpg + j, for j = 0 .. bpg - 1 in turn (lanes
  // from 16 / bpg on are not stored)
  __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                   _mm512_set1_epi32(bpg));
  Vec group = zero();
  for (int j = 0; j < bpg; ++j, idx = _mm512_add_epi32(idx, _mm512_set1_epi32(1)))
    group = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, db), _mm512_permutexvar_ps(idx, sum), group);
  _mm512_mask_storeu_ps(xs, static_cast<__mmask16>((1u << (16 / bpg)) - 1), group);
}
