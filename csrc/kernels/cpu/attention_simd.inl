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
  const float* p;
  RowF32(const void* cache, const uint16_t*, const uint8_t*, int hd, int64_t row)
      : p(static_cast<const float*>(cache) + row * hd) {}
  Vec vec(int i) const { return load(p + i); }
  float one(int i) const { return p[i]; }
};
struct RowBF16 {
  static constexpr bool kTail = true, kQuant = false, kChannel = false;
  const uint16_t* p;
  RowBF16(const void* cache, const uint16_t*, const uint8_t*, int hd, int64_t row)
      : p(static_cast<const uint16_t*>(cache) + row * hd) {}
  Vec vec(int i) const { return load(p + i); }
  float one(int i) const { return load1(p + i); }
};
struct RowI8 {
  static constexpr bool kTail = true, kQuant = true, kChannel = false;
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
};

// s[j] = scale * q . k_j for J keys at once (independent chains for the FMA
// pipes); each score's own FMA sequence is the same as with J = 1. qsum = sum(q), for quantized rows.
template <int J, typename KR>
inline void scores(const float* q, const KR* k, int hd, float scale, float qsum, float* s,
                   float bias = 0.0f) {  // k [J] rows, s [J]; bias: added to each dot (sealed I4Channel rows)
  Vec acc[J];
  for (int j = 0; j < J; ++j) acc[j] = zero();
  int i = 0;
  for (; i + kLanes <= hd; i += kLanes) {
    const Vec qv = load(q + i);
    for (int j = 0; j < J; ++j) acc[j] = fmadd(qv, k[j].vec(i), acc[j]);
  }
  for (int j = 0; j < J; ++j) {
    float d = hsum(acc[j]);
    if constexpr (KR::kTail)
      for (int t = i; t < hd; ++t) d += q[t] * k[j].one(t);
    if constexpr (KR::kQuant) d = __builtin_fmaf(d, k[j].s1, k[j].m1 * qsum);
    s[j] = (d + bias) * scale;
  }
}

// The scores of rows [base, base + n) of one block (4 at a time, then the rest).
template <typename KR>
inline void block_scores(const AttnTask& t, const float* q, int hd, float qsum, const void* cache,
                         const uint16_t* scales, const uint8_t* zeros, int64_t base, int n, float* s, float bias) {
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const KR k[4] = {KR(cache, scales, zeros, hd, base + j), KR(cache, scales, zeros, hd, base + j + 1),
                     KR(cache, scales, zeros, hd, base + j + 2), KR(cache, scales, zeros, hd, base + j + 3)};
    scores<4>(q, k, hd, t.scale, qsum, s + j, bias);
  }
  for (; j < n; ++j) {
    const KR k[1] = {KR(cache, scales, zeros, hd, base + j)};
    scores<1>(q, k, hd, t.scale, qsum, s + j, bias);
  }
}

// sum(q), in the lane order the scores use.
inline float sum_of(const float* q, int hd) {
  Vec acc = zero();
  int i = 0;
  for (; i + kLanes <= hd; i += kLanes) acc = add(acc, load(q + i));
  float d = hsum(acc);
  for (; i < hd; ++i) d += q[i];
  return d;
}

// One (token, head): scores block by block, online softmax, P V. NV > 0: head_dim = NV * kLanes, with
// the accumulator in registers (each key's update does not wait on a store and reload of it); NV = 0:
// any head_dim, the accumulator in scratch. The same operations in the same order either way.
template <int NV, typename KR, typename VR>
void attend(const AttnTask& t) {
  const int hd = NV > 0 ? NV * kLanes : t.head_dim, bs = t.block_size;
  float* s = t.scratch;         // [block_size]
  float* acc = t.scratch + bs;  // [head_dim] (NV = 0)
  float* qs = acc + hd;         // [head_dim] q * the channel scales of a sealed I4Channel block
  Vec racc[NV > 0 ? NV : 1];    // [NV] (NV > 0)
  if constexpr (NV > 0) {
    for (int v = 0; v < NV; ++v) racc[v] = zero();
  } else {
    for (int i = 0; i < hd; ++i) acc[i] = 0.0f;
  }
  float run_max = -__builtin_inff(), denom = 0.0f;
  float vbias = 0.0f;  // quantized V: sum_j p_j m1_j, added to every dim at the end
  const float qsum = KR::kQuant ? sum_of(t.q, hd) : 0.0f;
  const int n_blocks = t.pos / bs + 1;
  for (int b = 0; b < n_blocks; ++b) {
    const int n = b == n_blocks - 1 ? t.pos - b * bs + 1 : bs;
    const int64_t base = (static_cast<int64_t>(t.block_table[b]) * t.n_kv_heads + t.kv_head) * bs;  // first row
    if constexpr (KR::kChannel) {
      if (n == bs) {  // sealed: every row visible (kv_reads_sealed)
        const int64_t ch = (static_cast<int64_t>(t.block_table[b]) * t.n_kv_heads + t.kv_head) * hd;
        float bias = 0.0f;
        for (int c = 0; c < hd; ++c) {
          const float sc = f16_to_f32(t.k_scales[ch + c]);
          qs[c] = t.q[c] * sc;
          bias = __builtin_fmaf(t.q[c], -static_cast<float>(t.k_zeros[ch + c]) * sc, bias);
        }
        block_scores<RowCodes4>(t, qs, hd, 0.0f, t.k, nullptr, nullptr, base, n, s, bias);
      } else {
        const int64_t staged =
            (static_cast<int64_t>(t.stage_of_block[t.block_table[b]]) * t.n_kv_heads + t.kv_head) * bs;
        block_scores<RowI8>(t, t.q, hd, qsum, t.k_stage, t.k_stage_scales, t.k_stage_zeros, staged, n, s, 0.0f);
      }
    } else {
      block_scores<KR>(t, t.q, hd, qsum, t.k, t.k_scales, t.k_zeros, base, n, s, 0.0f);
    }
    float block_max = run_max;
    int j = 0;
    for (; j < n; ++j) block_max = s[j] > block_max ? s[j] : block_max;
    if (block_max > run_max) {
      const float corr = __builtin_expf(run_max - block_max);  // 0 on the first block
      denom *= corr;
      vbias *= corr;
      const Vec cv = set1(corr);
      if constexpr (NV > 0) {
        for (int v = 0; v < NV; ++v) racc[v] = mul(racc[v], cv);
      } else {
        int i = 0;
        for (; i + kLanes <= hd; i += kLanes) store(acc + i, mul(load(acc + i), cv));
        for (; i < hd; ++i) acc[i] *= corr;
      }
      run_max = block_max;
    }
    // The block's probabilities at once (exp_ps of the vector API), then summed in key order.
    const Vec vmax = set1(run_max);
    for (j = 0; j + kLanes <= n; j += kLanes) store(s + j, exp_ps(sub(load(s + j), vmax)));
    if (j < n) store_tail(s + j, tail_mask(n - j), exp_ps(sub(load_tail(s + j, tail_mask(n - j)), vmax)));
    for (j = 0; j < n; ++j) {
      const float p = s[j];
      denom += p;
      const VR vr(t.v, t.v_scales, t.v_zeros, hd, base + j);
      float pw = p;  // the weight of the row's vec() values
      if constexpr (VR::kQuant) {
        pw = p * vr.s1;
        vbias = __builtin_fmaf(p, vr.m1, vbias);
      }
      const Vec pv = set1(pw);
      if constexpr (NV > 0) {
        for (int v = 0; v < NV; ++v) racc[v] = fmadd(pv, vr.vec(v * kLanes), racc[v]);
      } else {
        int i = 0;
        for (; i + kLanes <= hd; i += kLanes) store(acc + i, fmadd(pv, vr.vec(i), load(acc + i)));
        if constexpr (VR::kTail)
          for (; i < hd; ++i) acc[i] += pw * vr.one(i);
      }
    }
  }
  const float inv = 1.0f / denom;
  if constexpr (NV > 0) {
    const Vec vb = set1(vbias);
    for (int v = 0; v < NV; ++v) store(t.out + v * kLanes, mul(VR::kQuant ? add(racc[v], vb) : racc[v], set1(inv)));
  } else {
    for (int i = 0; i < hd; ++i) t.out[i] = (VR::kQuant ? acc[i] + vbias : acc[i]) * inv;
  }
}

template <typename KR, typename VR>
void attend_dispatch(const AttnTask& t) {
  switch (t.head_dim % kLanes ? 0 : t.head_dim / kLanes) {
    case 1: return attend<1, KR, VR>(t);
    case 2: return attend<2, KR, VR>(t);
    case 3: return attend<3, KR, VR>(t);
    case 4: return attend<4, KR, VR>(t);
    case 5: return attend<5, KR, VR>(t);
    case 6: return attend<6, KR, VR>(t);
    case 8: return attend<8, KR, VR>(t);
    default: return attend<0, KR, VR>(t);
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
