// Per-(token, head) paged attention, written once against the vector API of simd_avx2.h /
// simd_avx512.h (Vec, kLanes, load, fmadd, hsum, ...). Raw pointers and intrinsics only
// (see isa_kernels.h): no std:: helpers; the probabilities by exp_ps (within 2 ulp), the
// rescaling factor by the C library's expf.
//
// note: included by attention_avx2.cpp / attention_avx512.cpp inside their ISA namespace,
// after isa_kernels.h and their simd_*.h, so each ISA compiles its own copy with its own
// flags; never include it anywhere else. It includes nothing itself.

namespace {

// A cache row as this kernel reads it: vec(i) gives dims [i, i + kLanes) (i a multiple of kLanes), one(i) a single
// dim (for a head_dim that is not a multiple of kLanes; kTail false where that cannot be). fp32 and bf16 rows give
// their values. Quantized rows (kQuant) give their codes as fp32 instead, with s1 and m1 (x = code * s1 + m1,
// m1 = -zero * s1): the kernel folds the scale and offset into each product rather than dequantising every
// element first, q . x = s1 (q . codes) + m1 sum(q) and sum_j p_j x_j = sum_j (p_j s1_j) codes_j + sum_j p_j m1_j,
// so a quantized row costs as many vector operations as a bf16 one, on fewer bytes.
struct RowF32 {
  static constexpr bool kTail = true, kQuant = false, kChannel = false;
  static int64_t bytes(int hd) { return 4 * static_cast<int64_t>(hd); }
  const float* p;
  RowF32(const void* cache, const uint16_t*, const uint8_t*, int hd, int64_t row)
      : p(static_cast<const float*>(cache) + row * hd) {}
  Vec vec(int i) const { return load(p + i); }
  float one(int i) const { return p[i]; }
};
struct RowBF16 {
  static constexpr bool kTail = true, kQuant = false, kChannel = false;
  static int64_t bytes(int hd) { return 2 * static_cast<int64_t>(hd); }
  const uint16_t* p;
  RowBF16(const void* cache, const uint16_t*, const uint8_t*, int hd, int64_t row)
      : p(static_cast<const uint16_t*>(cache) + row * hd) {}
  Vec vec(int i) const { return load(p + i); }
  float one(int i) const { return load1(p + i); }
};
struct RowI8 {
  static constexpr bool kTail = true, kQuant = true, kChannel = false;
  static int64_t bytes(int hd) { return hd; }
  const uint8_t* p;
  float s1, m1;
  RowI8(const void* cache, const uint16_t* scales, const uint8_t* zeros, int hd, int64_t row)
      : p(static_cast<const uint8_t*>(cache) + row * hd),
        s1(f16_to_f32(scales[row])),
        m1(-static_cast<float>(zeros[row]) * s1) {}
  Vec vec(int i) const { return bytes_f32(widen_u8(p + i)); }
  float one(int i) const { return static_cast<float>(p[i]); }
};
// I4: in each run of 32 dims, byte j holds dim j (low nibble) and dim j + 16 (high); kLanes divides 16.
struct RowI4 {
  static constexpr bool kTail = false, kQuant = true, kChannel = false;  // head_dim is a multiple of 32
  static int64_t bytes(int hd) { return hd / 2; }
  const uint8_t* p;
  float s1, m1;
  RowI4(const void* cache, const uint16_t* scales, const uint8_t* zeros, int hd, int64_t row)
      : p(static_cast<const uint8_t*>(cache) + row * (hd / 2)),
        s1(f16_to_f32(scales[row])),
        m1(-static_cast<float>(zeros[row]) * s1) {}
  Vec vec(int i) const {
    const IVec b = widen_u8(p + (i / 32) * 16 + i % 16);
    return i % 32 < 16 ? low_nibbles(b) : high_nibbles(b);
  }
  float one(int i) const {
    const uint8_t b = p[(i / 32) * 16 + i % 16];
    return static_cast<float>(i % 32 < 16 ? b & 0x0f : b >> 4);
  }
};

// The codes of a sealed I4Channel row as fp32 (their per-channel scales are folded into q by the caller).
struct RowCodes4 {
  static constexpr bool kTail = false, kQuant = false, kChannel = false;
  static int64_t bytes(int hd) { return hd / 2; }
  const uint8_t* p;
  RowCodes4(const void* cache, const uint16_t*, const uint8_t*, int hd, int64_t row)
      : p(static_cast<const uint8_t*>(cache) + row * (hd / 2)) {}
  Vec vec(int i) const {
    const IVec b = widen_u8(p + (i / 32) * 16 + i % 16);
    return i % 32 < 16 ? low_nibbles(b) : high_nibbles(b);
  }
  float one(int) const { return 0.0f; }
};
// I4Channel K (ops.h): a tag; attend reads each block through RowCodes4 (sealed: every row visible to the
// query) or RowI8 (the staged rows). With q' = q * scale_c and bias = q . offset_c, a sealed row's
// q . x = q' . codes + bias.
struct KeyI4Channel {
  static constexpr bool kTail = false, kQuant = true, kChannel = true;
  static int64_t bytes(int hd) { return hd / 2; }  // a sealed row's codes
};

// d[g][j] = q_g . k_j (the codes' dot for quantized rows) for G query heads and 4 keys at once (independent chains
// for the FMA pipes; each key row's vec() is formed once for the G heads), reduced four at a time by hsum4: a dot's
// bits depend neither on G nor on the keys beside it.
template <int G, typename KR>
inline void dots4(const float* const* q, const KR* k, int hd, float (*d)[4]) {  // k [4] rows
  Vec acc[G][4];
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < 4; ++j) acc[g][j] = zero();
  int i = 0;
  for (; i + kLanes <= hd; i += kLanes) {
    Vec kv[4];
    for (int j = 0; j < 4; ++j) kv[j] = k[j].vec(i);
    for (int g = 0; g < G; ++g) {
      const Vec qv = load(q[g] + i);
      for (int j = 0; j < 4; ++j) acc[g][j] = fmadd(qv, kv[j], acc[g][j]);
    }
  }
  for (int g = 0; g < G; ++g) {
    hsum4(acc[g][0], acc[g][1], acc[g][2], acc[g][3], d[g]);
    if constexpr (KR::kTail)
      for (int j = 0; j < 4; ++j)
        for (int t = i; t < hd; ++t) d[g][j] += q[g][t] * k[j].one(t);
  }
}

// Rows [row, row + n) of a cache (row_bytes each) on their way into the cache, one line at a time.
inline void prefetch_rows(const void* cache, int64_t row, int n, int64_t row_bytes) {
  const char* p = static_cast<const char*>(cache) + row * row_bytes;
  for (int64_t o = 0; o < n * row_bytes; o += 64) prefetch(p + o);
}

// Positions [p0, p1) of a sequence (its block table, one KV head) on their way into L2: their K and V rows, and
// quantized rows' scales and zero points. attend calls it a share at each block for the thread's next task
// (AttnTask::next_table), a whole task ahead of their use, and on a thread's last task for its own block
// kAheadBlocks on. Each block's rows of a KV head are contiguous (4 KB of int8 K at the default model's shapes: a
// page of its own), so a run of positions within a block is one range of lines per array; its first byte is read
// first, so that the page's translation is in the TLB when the prefetches issue. Measured on the Zen 4 host
// (bench_attention.py --layers 30, 2 threads; RESULTS.md 2026-12-05 02:08 and 02:21): 32 rows after 2,000 tokens, int8
// K and V with int8 q, 1.65-1.91 -> 1.45-1.57 ms a layer; the read alone, or the prefetches alone (into L1 or L2),
// did not move it.
constexpr int kAheadBlocks = 2;

template <typename KR, typename VR>
inline void prefetch_positions(const AttnTask& t, const int32_t* table, int kv_head, int hd, int64_t p0, int64_t p1) {
  const int bs = t.block_size;
  auto fetch = [](const void* base, int64_t b0, int64_t b1) {  // bytes [b0, b1) of base, a line at a time
    const char* c = static_cast<const char*>(base);
    if (b1 <= b0) return;
    const char first = *reinterpret_cast<const volatile char*>(c + b0);
    __asm__ volatile("" : : "r"(first));
    for (int64_t o = b0 & ~int64_t{63}; o < b1; o += 64) _mm_prefetch(c + o, _MM_HINT_T1);
  };
  for (int64_t p = p0; p < p1;) {
    const int64_t in = p % bs, n = (p1 - p < bs - in ? p1 - p : bs - in);
    const int64_t row = (static_cast<int64_t>(table[p / bs]) * t.n_kv_heads + kv_head) * bs + in;
    if constexpr (!KR::kChannel) fetch(t.k, row * KR::bytes(hd), (row + n) * KR::bytes(hd));
    fetch(t.v, row * VR::bytes(hd), (row + n) * VR::bytes(hd));
    if constexpr (KR::kQuant && !KR::kChannel) {
      fetch(t.k_scales, 2 * row, 2 * (row + n));
      fetch(t.k_zeros, row, row + n);
    }
    if constexpr (VR::kQuant) {
      fetch(t.v_scales, 2 * row, 2 * (row + n));
      fetch(t.v_zeros, row, row + n);
    }
    p += n;
  }
}

// The next task's first block of I8 key rows (rows: how many it holds; 0 and nullptr when there is no next task),
// which the int8_q path fetches into L1 during this task's last P V.
inline const uint8_t* next_first_keys(const AttnTask& t, int hd, int& rows) {
  rows = t.next_table ? (t.next_pos + 1 < t.block_size ? t.next_pos + 1 : t.block_size) : 0;
  if (!rows) return nullptr;
  return static_cast<const uint8_t*>(t.k) +
         (static_cast<int64_t>(t.next_table[0]) * t.n_kv_heads + t.next_kv_head) * t.block_size * hd;
}

// Rows [r0, r0 + r) (r <= kLanes) of a quantized block as vectors: s1 (the scales) and m1 = -zero * s1, the
// same bits as a row's own; lanes past r 0.
inline void scale_min(const uint16_t* scales, const uint8_t* zeros, int64_t r0, int r, Vec& s1, Vec& m1) {
  if (r == kLanes) {
    s1 = load_f16(scales + r0);
    m1 = mul(sub(zero(), bytes_f32(widen_u8(zeros + r0))), s1);
    return;
  }
  uint16_t sb[kLanes];
  uint8_t zb[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    sb[j] = j < r ? scales[r0 + j] : 0;
    zb[j] = j < r ? zeros[r0 + j] : 0;
  }
  s1 = load_f16(sb);
  m1 = mul(sub(zero(), bytes_f32(widen_u8(zb))), s1);
}

// The scores of rows [base, base + n) of one block for G heads: s[g][j] = scale * (q_g . k_j + bias[g]), with a
// quantized row's q . x = s1 (q . codes) + m1 sum(q) (qsum[g] = sum(q_g)). The dots 4 keys at a time (the last
// group's missing keys repeat the block's last row, their sums unused), then the rest kLanes keys at a time.
template <int G, typename KR>
inline void block_scores(const AttnTask& t, const float* const* q, int hd, const float* qsum, const void* cache,
                         const uint16_t* scales, const uint8_t* zeros, int64_t base, int n, float* const* s,
                         const float* bias) {
  for (int j = 0; j < n; j += 4) {
    const int last = n - 1;
    const KR k[4] = {KR(cache, scales, zeros, hd, base + j),
                     KR(cache, scales, zeros, hd, base + (j + 1 < n ? j + 1 : last)),
                     KR(cache, scales, zeros, hd, base + (j + 2 < n ? j + 2 : last)),
                     KR(cache, scales, zeros, hd, base + (j + 3 < n ? j + 3 : last))};
    float d[G][4];
    dots4<G>(q, k, hd, d);
    for (int g = 0; g < G; ++g)
      for (int jj = 0; jj < 4 && j + jj < n; ++jj) s[g][j + jj] = d[g][jj];
  }
  const Vec scale = set1(t.scale);
  for (int j = 0; j < n; j += kLanes) {
    const int r = n - j < kLanes ? n - j : kLanes;
    Vec s1 = zero(), m1 = zero();
    if constexpr (KR::kQuant) scale_min(scales, zeros, base + j, r, s1, m1);
    for (int g = 0; g < G; ++g) {
      Vec d = r == kLanes ? load(s[g] + j) : load_tail(s[g] + j, tail_mask(r));
      if constexpr (KR::kQuant) d = fmadd(d, s1, mul(m1, set1(qsum[g])));
      d = mul(add(d, set1(bias[g])), scale);
      if (r == kLanes) {
        store(s[g] + j, d);
      } else {
        store_tail(s[g] + j, tail_mask(r), d);
      }
    }
  }
}

#ifdef LMRT_ATTN_VNNI
// AttnTask::int8_q (attention_avx512vnni.cpp only): I8 K rows against each head's q as int8.
template <typename KR>
struct ScoresInt8 {  // the key rows that take int8 q: I8's (head_dim a multiple of 64, at most kQ8MaxHeadDim)
  static constexpr bool value = false;
};
template <>
struct ScoresInt8<RowI8> {
  static constexpr bool value = true;
};
constexpr int kQ8MaxHeadDim = 256;
struct Q8Head {
  alignas(64) int8_t q[kQ8MaxHeadDim];  // [head_dim] round_half_even(q * (1 / scale))
  float scale;                          // max|q| / 127 (0: q all 0)
  float sum;                            // sum of q[] (exact)
};

inline bool int8_scores(const AttnTask& t) { return t.int8_q && t.head_dim % 64 == 0 && t.head_dim <= kQ8MaxHeadDim; }

inline void quantize_head(const float* q, int hd, Q8Head& h) {
  Vec amax = zero();
  for (int i = 0; i < hd; i += kLanes) amax = max_lanes(amax, _mm512_abs_ps(load(q + i)));
  h.scale = hmax(amax) / 127.0f;
  const Vec inv = set1(h.scale > 0.0f ? 1.0f / h.scale : 0.0f);
  __m512i sum = _mm512_setzero_si512();
  for (int i = 0; i < hd; i += kLanes) {
    const __m512i v = _mm512_cvtps_epi32(mul(load(q + i), inv));  // round half even; |v| <= 127
    _mm_store_si128(reinterpret_cast<__m128i*>(h.q + i), _mm512_cvtepi32_epi8(v));
    sum = _mm512_add_epi32(sum, v);
  }
  h.sum = static_cast<float>(_mm512_reduce_add_epi32(sum));
}

// block_scores for I8 rows and int8 q: 16 keys at a time, their rows' 64-dim runs transposed (vector p: dims
// 4p..4p+3 of each key, a key a lane), then per head one vpdpbusd a vector (codes unsigned, q signed) gives each
// key's integer dot, exact; s[g][j] = scale * (q8.scale * (s1 dot + m1 q8.sum) + bias[g]) (rows past n: 0 codes).
template <int G>
inline void block_scores_q8(const AttnTask& t, const Q8Head* q8, int hd, const void* cache, const uint16_t* scales,
                            const uint8_t* zeros, int64_t base, int n, float* const* s, const float* bias,
                            const uint8_t* pf = nullptr) {
  const uint8_t* rows = static_cast<const uint8_t*>(cache) + base * hd;
  const Vec scale = set1(t.scale);
  for (int j = 0; j < n; j += kLanes) {
    const int r = n - j < kLanes ? n - j : kLanes;
    if (pf)  // the same keys' value rows, on their way for P V
      for (int64_t o = 0; o < static_cast<int64_t>(r) * hd; o += 64) prefetch(pf + j * hd + o);
    __m512i dot[G];
    for (int g = 0; g < G; ++g) dot[g] = _mm512_setzero_si512();
    for (int c = 0; c < hd; c += 64) {
      __m512i w[16];
      for (int k = 0; k < 16; ++k)
        w[k] = k < r ? _mm512_loadu_si512(rows + static_cast<int64_t>(j + k) * hd + c) : _mm512_setzero_si512();
      transpose16(w);
      for (int p = 0; p < 16; ++p)
        for (int g = 0; g < G; ++g) {
          int32_t word;
          __builtin_memcpy(&word, q8[g].q + c + 4 * p, sizeof word);
          dot[g] = _mm512_dpbusd_epi32(dot[g], w[p], _mm512_set1_epi32(word));
        }
    }
    Vec s1, m1;
    scale_min(scales, zeros, base + j, r, s1, m1);
    for (int g = 0; g < G; ++g) {
      Vec d = fmadd(_mm512_cvtepi32_ps(dot[g]), s1, mul(m1, set1(q8[g].sum)));
      d = mul(add(mul(d, set1(q8[g].scale)), set1(bias[g])), scale);
      if (r == kLanes) {
        store(s[g] + j, d);
      } else {
        store_tail(s[g] + j, tail_mask(r), d);
      }
    }
  }
}

// P V of int8_q over I8 V (head_dim a multiple of 32): within each run of up to kPvKeys keys of a block, each head's
// value-row weights w_j = p_j s1_j become int16, round_half_even(w_j * 32767 / max |w|), and the sums of w16_j *
// code_j are taken in int32 by vpdpwssd, two keys a product (codes zero-extended to int16, two rows' words
// interleaved), exact; then acc += float(sum) * (max w / 32767). Each weight is off by at most half a step of
// max w / 32767 (2^-16 of its run's largest), where the fp32 path rounds each product to 2^-24 of itself.
// The accumulators hold the dims permuted (unpack order, see pv_natural); runs of kPvKeys keep the int32 sums
// below 2^31 (64 x 32767 x 255). A run whose weights are not all finite makes the heads' outputs NaN, as fp32's.
constexpr int kPvKeys = 64;

template <typename VR, int NV>
struct PvInt16 {  // the value rows and head sizes that take it
  static constexpr bool value = false;
};
template <int NV>
struct PvInt16<RowI8, NV> {
  static constexpr bool value = NV > 0 && NV % 2 == 0;
};

template <int G, int NV>
inline void pv_int16(const AttnTask& t, float* const* s, int64_t base, int n, Vec (*racc)[NV], bool* poisoned,
                     const uint8_t* pf, int pf_n) {
  constexpr int hd = NV * kLanes;
  const uint8_t* rows = static_cast<const uint8_t*>(t.v) + base * hd;
  for (int j0 = 0; j0 < n; j0 += kPvKeys) {
    const int c = n - j0 < kPvKeys ? n - j0 : kPvKeys;
    alignas(64) int16_t w16[G][kPvKeys + kLanes];  // [G][c rounded up to kLanes]: lanes past c 0
    float step[G];
    for (int g = 0; g < G; ++g) {
      Vec mx = zero();
      __mmask16 nan = 0;
      for (int j = 0; j < c; j += kLanes) {
        const Vec w = load_tail(s[g] + j0 + j, c - j >= kLanes ? Tail(0xffff) : tail_mask(c - j));
        mx = max_lanes(mx, _mm512_abs_ps(w));
        nan |= _mm512_cmp_ps_mask(w, w, _CMP_UNORD_Q);
      }
      const float wmax = hmax(mx);
      if (nan || !(wmax <= __FLT_MAX__)) poisoned[g] = true;
      step[g] = wmax / 32767.0f;
      const Vec inv = set1(wmax > 0.0f && !poisoned[g] ? 32767.0f / wmax : 0.0f);
      for (int j = 0; j < c; j += kLanes) {
        const Vec w = load_tail(s[g] + j0 + j, c - j >= kLanes ? Tail(0xffff) : tail_mask(c - j));
        const __m256i w16v = _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(mul(w, inv)));  // |w| <= max: no saturation
        _mm256_store_si256(reinterpret_cast<__m256i*>(w16[g] + j), w16v);
      }
    }
    __m512i acc[G][NV];
    for (int g = 0; g < G; ++g)
      for (int v = 0; v < NV; ++v) acc[g][v] = _mm512_setzero_si512();
    for (int j = 0; j < c; j += 2) {  // keys j and j + 1 (past c: weight 0, its row any row of the block)
      const uint8_t* r0 = rows + static_cast<int64_t>(j0 + j) * hd;
      const uint8_t* r1 = j + 1 < c ? r0 + hd : r0;
      if (j0 + j < pf_n)  // the next block's key rows, two a step
        for (int64_t o = 0; o < 2 * hd; o += 64) prefetch(pf + (j0 + j) * hd + o);
      __m512i w[G];
      for (int g = 0; g < G; ++g) {
        int32_t pair;
        __builtin_memcpy(&pair, w16[g] + j, sizeof pair);
        w[g] = _mm512_set1_epi32(pair);
      }
      for (int v = 0; v < NV; v += 2) {  // dims 16 v .. 16 v + 31
        const __m512i a = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + v * 16)));
        const __m512i b = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r1 + v * 16)));
        const __m512i lo = _mm512_unpacklo_epi16(a, b), hi = _mm512_unpackhi_epi16(a, b);
        for (int g = 0; g < G; ++g) {
          acc[g][v] = _mm512_dpwssd_epi32(acc[g][v], lo, w[g]);
          acc[g][v + 1] = _mm512_dpwssd_epi32(acc[g][v + 1], hi, w[g]);
        }
      }
    }
    for (int g = 0; g < G; ++g)
      for (int v = 0; v < NV; ++v) racc[g][v] = fmadd(_mm512_cvtepi32_ps(acc[g][v]), set1(step[g]), racc[g][v]);
  }
}

// pv_int16's accumulators in dim order: of each pair (lo, hi) for dims d..d + 31, lane 4L + i of lo holds dim
// d + 8L + i and of hi dim d + 8L + 4 + i (L a 128-bit lane, i < 4).
template <int NV>
inline void pv_natural(Vec* acc) {
  for (int v = 0; v < NV; v += 2) {
    const Vec lo = acc[v], hi = acc[v + 1];
    const Vec a = _mm512_shuffle_f32x4(lo, hi, _MM_SHUFFLE(1, 0, 1, 0));  // lo L0, lo L1, hi L0, hi L1
    const Vec b = _mm512_shuffle_f32x4(lo, hi, _MM_SHUFFLE(3, 2, 3, 2));  // lo L2, lo L3, hi L2, hi L3
    acc[v] = _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(3, 1, 2, 0));
    acc[v + 1] = _mm512_shuffle_f32x4(b, b, _MM_SHUFFLE(3, 1, 2, 0));
  }
}
#endif

// sum(q), in the lane order the scores use.
inline float sum_of(const float* q, int hd) {
  Vec acc = zero();
  int i = 0;
  for (; i + kLanes <= hd; i += kLanes) acc = add(acc, load(q + i));
  float d = hsum(acc);
  for (; i < hd; ++i) d += q[i];
  return d;
}

// G heads of one token that share a KV head (heads t.q + g * head_dim, outputs t.out + g * head_dim): scores block
// by block, online softmax, P V, each head on its own running max, denominator and accumulator. A key or value
// row's vec() is formed once for the G heads; every head's operations are those of G = 1, in the same order, so
// its bits do not depend on G. NV > 0: head_dim = NV * kLanes, the accumulators in registers (each value row's
// update does not wait on a store and reload); NV = 0: any head_dim, the accumulators in scratch.
template <int NV, int G, typename KR, typename VR>
void attend(const AttnTask& t) {
  const int hd = NV > 0 ? NV * kLanes : t.head_dim, bs = t.block_size;
  float* s[G];    // [G][block_size] scores, then probabilities
  float* acc[G];  // [G][head_dim] (NV = 0)
  float* qs[G];   // [G][head_dim] q * the channel scales of a sealed I4Channel block
  const float* q[G];
  for (int g = 0; g < G; ++g) {
    s[g] = t.scratch + g * (bs + 2 * hd);
    acc[g] = s[g] + bs;
    qs[g] = acc[g] + hd;
    q[g] = t.q + g * hd;
  }
  Vec racc[G][NV > 0 ? NV : 1];  // [G][NV] (NV > 0)
  Vec dsum[G], vbsum[G];         // [G] the denominator's and (quantized V) sum_j p_j m1_j's lanes
  float run_max[G], qsum[G], zeros_g[G];
  for (int g = 0; g < G; ++g) {
    if constexpr (NV > 0) {
      for (int v = 0; v < NV; ++v) racc[g][v] = zero();
    } else {
      for (int i = 0; i < hd; ++i) acc[g][i] = 0.0f;
    }
    run_max[g] = -__builtin_inff();
    dsum[g] = zero();
    vbsum[g] = zero();
    qsum[g] = KR::kQuant ? sum_of(q[g], hd) : 0.0f;
    zeros_g[g] = 0.0f;
  }
#ifdef LMRT_ATTN_VNNI
  Q8Head q8[ScoresInt8<KR>::value ? G : 1];
  const bool q8_scores = ScoresInt8<KR>::value && int8_scores(t);
  if (q8_scores)
    for (int g = 0; g < G; ++g) quantize_head(q[g], hd, q8[g]);
  const bool q8_pv = PvInt16<VR, NV>::value && t.int8_q;  // (NV > 0: racc exists)
  bool poisoned[G] = {};
#endif
  const int n_blocks = t.pos / bs + 1;
  for (int b = 0; b < n_blocks; ++b) {
    const int n = b == n_blocks - 1 ? t.pos - b * bs + 1 : bs;
    const int64_t base = (static_cast<int64_t>(t.block_table[b]) * t.n_kv_heads + t.kv_head) * bs;  // first row
    // The block's value rows (read after its scores) and the next block's key rows (after its P V) on their way:
    // a sequence's blocks lie anywhere in the pool, where the hardware's prefetchers lose the stream.
    const int64_t next =
        b + 1 < n_blocks ? (static_cast<int64_t>(t.block_table[b + 1]) * t.n_kv_heads + t.kv_head) * bs : 0;
    const int next_n = b + 1 < n_blocks ? (b + 2 == n_blocks ? t.pos - (b + 1) * bs + 1 : bs) : 0;
#ifdef LMRT_ATTN_VNNI
    const bool spread = q8_scores && q8_pv;  // the prefetches spread over the loops instead
#else
    constexpr bool spread = false;
#endif
    if (!spread) {
      prefetch_rows(t.v, base, n, VR::bytes(hd));
      if (next_n) prefetch_rows(t.k, next, next_n, KR::bytes(hd));
    }
    if (t.next_table) {  // the next task's share for this block
      const int64_t total = static_cast<int64_t>(t.next_pos) + 1;
      prefetch_positions<KR, VR>(t, t.next_table, t.next_kv_head, hd, b * total / n_blocks, (b + 1) * total / n_blocks);
    } else if (b + kAheadBlocks < n_blocks) {  // the thread's last task: its own block kAheadBlocks on
      const int64_t p0 = static_cast<int64_t>(b + kAheadBlocks) * bs;
      prefetch_positions<KR, VR>(t, t.block_table, t.kv_head, hd, p0,
                                 p0 + (b + kAheadBlocks + 1 == n_blocks ? t.pos + 1 - p0 : bs));
    }
    if constexpr (KR::kChannel) {
      if (n == bs) {  // sealed: every row visible (kv_reads_sealed)
        const int64_t ch = (static_cast<int64_t>(t.block_table[b]) * t.n_kv_heads + t.kv_head) * hd;
        float bias[G];
        const float* qsc[G];
        for (int g = 0; g < G; ++g) {
          bias[g] = 0.0f;
          for (int c = 0; c < hd; ++c) {
            const float sc = f16_to_f32(t.k_scales[ch + c]);
            qs[g][c] = q[g][c] * sc;
            bias[g] = __builtin_fmaf(q[g][c], -static_cast<float>(t.k_zeros[ch + c]) * sc, bias[g]);
          }
          qsc[g] = qs[g];
        }
        block_scores<G, RowCodes4>(t, qsc, hd, zeros_g, t.k, nullptr, nullptr, base, n, s, bias);
      } else {
        const int64_t staged =
            (static_cast<int64_t>(t.stage_of_block[t.block_table[b]]) * t.n_kv_heads + t.kv_head) * bs;
        block_scores<G, RowI8>(t, q, hd, qsum, t.k_stage, t.k_stage_scales, t.k_stage_zeros, staged, n, s, zeros_g);
      }
    } else {
#ifdef LMRT_ATTN_VNNI
      if constexpr (ScoresInt8<KR>::value) {
        if (q8_scores) {
          block_scores_q8<G>(t, q8, hd, t.k, t.k_scales, t.k_zeros, base, n, s, zeros_g,
                             spread ? static_cast<const uint8_t*>(t.v) + base * hd : nullptr);
        } else {
          block_scores<G, KR>(t, q, hd, qsum, t.k, t.k_scales, t.k_zeros, base, n, s, zeros_g);
        }
      } else {
        block_scores<G, KR>(t, q, hd, qsum, t.k, t.k_scales, t.k_zeros, base, n, s, zeros_g);
      }
#else
      block_scores<G, KR>(t, q, hd, qsum, t.k, t.k_scales, t.k_zeros, base, n, s, zeros_g);
#endif
    }
    for (int g = 0; g < G; ++g) {  // the block's max (any order gives its bits), then the running state rescaled
      float block_max = run_max[g];
      int j = 0;
      if (n >= kLanes) {
        Vec mx = load(s[g]);
        for (j = kLanes; j + kLanes <= n; j += kLanes) mx = max_lanes(mx, load(s[g] + j));
        const float m = hmax(mx);
        block_max = m > block_max ? m : block_max;
      }
      for (; j < n; ++j) block_max = s[g][j] > block_max ? s[g][j] : block_max;
      if (block_max > run_max[g]) {
        const float corr = __builtin_expf(run_max[g] - block_max);  // 0 on the first block
        const Vec cv = set1(corr);
        dsum[g] = mul(dsum[g], cv);
        vbsum[g] = mul(vbsum[g], cv);
        if constexpr (NV > 0) {
          for (int v = 0; v < NV; ++v) racc[g][v] = mul(racc[g][v], cv);
        } else {
          int i = 0;
          for (; i + kLanes <= hd; i += kLanes) store(acc[g] + i, mul(load(acc[g] + i), cv));
          for (; i < hd; ++i) acc[g][i] *= corr;
        }
        run_max[g] = block_max;
      }
    }
    // The block's probabilities kLanes keys at a time: p_j into the denominator's lanes; a quantized V's
    // p_j m1_j into vbias's, and s[g][j] becomes p_j s1_j, the weight of value row j's vec().
    for (int j = 0; j < n; j += kLanes) {
      const int r = n - j < kLanes ? n - j : kLanes;
      Vec s1 = zero(), m1 = zero();
      if constexpr (VR::kQuant) scale_min(t.v_scales, t.v_zeros, base + j, r, s1, m1);
      for (int g = 0; g < G; ++g) {
        const Vec vmax = set1(run_max[g]);
        Vec p;
        if (r == kLanes) {
          p = exp_ps(sub(load(s[g] + j), vmax));
        } else {  // lanes past r: 0
          store_tail(s[g] + j, tail_mask(r), exp_ps(sub(load_tail(s[g] + j, tail_mask(r)), vmax)));
          p = load_tail(s[g] + j, tail_mask(r));
        }
        dsum[g] = add(dsum[g], p);
        if constexpr (VR::kQuant) {
          vbsum[g] = fmadd(p, m1, vbsum[g]);
          p = mul(p, s1);
        }
        if (r == kLanes) {
          store(s[g] + j, p);
        } else {
          store_tail(s[g] + j, tail_mask(r), p);
        }
      }
    }
#ifdef LMRT_ATTN_VNNI
    if constexpr (PvInt16<VR, NV>::value) {
      if (q8_pv) {
        if (next_n) {
          pv_int16<G, NV>(t, s, base, n, racc, poisoned, static_cast<const uint8_t*>(t.k) + next * hd, next_n);
        } else {  // the last block: the next task's first
          int next_rows = 0;
          const uint8_t* next_k = next_first_keys(t, hd, next_rows);
          pv_int16<G, NV>(t, s, base, n, racc, poisoned, next_k, next_rows);
        }
        continue;
      }
    }
#endif
    for (int j = 0; j < n; ++j) {
      const VR vr(t.v, t.v_scales, t.v_zeros, hd, base + j);
      Vec pv[G];
      for (int g = 0; g < G; ++g) pv[g] = set1(s[g][j]);
      if constexpr (NV > 0) {
        for (int v = 0; v < NV; ++v) {
          const Vec x = vr.vec(v * kLanes);
          for (int g = 0; g < G; ++g) racc[g][v] = fmadd(pv[g], x, racc[g][v]);
        }
      } else {
        int i = 0;
        for (; i + kLanes <= hd; i += kLanes) {
          const Vec x = vr.vec(i);
          for (int g = 0; g < G; ++g) store(acc[g] + i, fmadd(pv[g], x, load(acc[g] + i)));
        }
        if constexpr (VR::kTail)
          for (; i < hd; ++i)
            for (int g = 0; g < G; ++g) acc[g][i] += s[g][j] * vr.one(i);
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    const float inv = 1.0f / hsum(dsum[g]), vbias = hsum(vbsum[g]);  // vbias: added to every dim
    float* out = t.out + g * hd;
    if constexpr (NV > 0) {
#ifdef LMRT_ATTN_VNNI
      if constexpr (PvInt16<VR, NV>::value) {
        if (q8_pv) pv_natural<NV>(racc[g]);
        if (q8_pv && poisoned[g])
          for (int v = 0; v < NV; ++v) racc[g][v] = set1(__builtin_nanf(""));
      }
#endif
      const Vec vb = set1(vbias);
      for (int v = 0; v < NV; ++v)
        store(out + v * kLanes, mul(VR::kQuant ? add(racc[g][v], vb) : racc[g][v], set1(inv)));
    } else {
      for (int i = 0; i < hd; ++i) out[i] = (VR::kQuant ? acc[g][i] + vbias : acc[g][i]) * inv;
    }
  }
}

// Heads per call for a head_dim of NV vectors: up to 4, as many as keep their G * NV accumulators within half the
// vector registers (AVX-512: 32, AVX2: 16); NV = 0 (accumulators in scratch): 4.
template <int NV>
constexpr int max_group() {
  constexpr int half = kLanes == 16 ? 16 : 8;
  constexpr int g = NV == 0 ? 4 : half / NV;
  return g > 4 ? 4 : g < 1 ? 1 : g;
}

template <int NV, typename KR, typename VR>
void attend_heads(const AttnTask& t) {  // t.n_q heads, in calls of up to max_group<NV>() heads
  AttnTask u = t;
  int left = t.n_q;
  while (left > 0) {
    const int g = left < max_group<NV>() ? left : max_group<NV>();
    switch (g) {
      case 1: attend<NV, 1, KR, VR>(u); break;
      case 2: attend<NV, 2, KR, VR>(u); break;
      case 3: attend<NV, 3, KR, VR>(u); break;
      default: attend<NV, 4, KR, VR>(u); break;
    }
    u.q += g * u.head_dim;
    u.out += g * u.head_dim;
    left -= g;
  }
}

template <typename KR, typename VR>
void attend_dispatch(const AttnTask& t) {
  switch (t.head_dim % kLanes ? 0 : t.head_dim / kLanes) {
    case 1: return attend_heads<1, KR, VR>(t);
    case 2: return attend_heads<2, KR, VR>(t);
    case 3: return attend_heads<3, KR, VR>(t);
    case 4: return attend_heads<4, KR, VR>(t);
    case 5: return attend_heads<5, KR, VR>(t);
    case 6: return attend_heads<6, KR, VR>(t);
    case 8: return attend_heads<8, KR, VR>(t);
    default: return attend_heads<0, KR, VR>(t);
  }
}

// The dtype dispatch of attention_one: K and V alike, or 8-bit K with 4-bit V (the pairs the cache offers).
inline void attend(const AttnTask& t) {
  if (t.k_dtype == kI8 && t.v_dtype == kI4) return attend_dispatch<RowI8, RowI4>(t);
  if (t.k_dtype == kI4Channel) return attend_dispatch<KeyI4Channel, RowI4>(t);
  switch (t.k_dtype) {
    case kBF16: return attend_dispatch<RowBF16, RowBF16>(t);
    case kI8: return attend_dispatch<RowI8, RowI8>(t);
    case kI4: return attend_dispatch<RowI4, RowI4>(t);
    default: return attend_dispatch<RowF32, RowF32>(t);
  }
}

}  // namespace
