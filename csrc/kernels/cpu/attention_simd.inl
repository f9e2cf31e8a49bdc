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

// s[g][j] = scale * q_g . k_j for G query heads and J keys at once (independent chains for the FMA pipes; each key
// row's vec() is formed once for the G heads); each score's own FMA sequence is the same as with G = J = 1.
// qsum[g] = sum(q_g), for quantized rows; bias[g]: added to each of head g's dots (sealed I4Channel rows).
template <int G, int J, typename KR>
inline void scores(const float* const* q, const KR* k, int hd, float scale, const float* qsum, float* const* s,
                   int64_t j0, const float* bias) {  // k [J] rows; head g's scores at s[g] + j0
  Vec acc[G][J];
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < J; ++j) acc[g][j] = zero();
  int i = 0;
  for (; i + kLanes <= hd; i += kLanes) {
    Vec kv[J];
    for (int j = 0; j < J; ++j) kv[j] = k[j].vec(i);
    for (int g = 0; g < G; ++g) {
      const Vec qv = load(q[g] + i);
      for (int j = 0; j < J; ++j) acc[g][j] = fmadd(qv, kv[j], acc[g][j]);
    }
  }
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < J; ++j) {
      float d = hsum(acc[g][j]);
      if constexpr (KR::kTail)
        for (int t = i; t < hd; ++t) d += q[g][t] * k[j].one(t);
      if constexpr (KR::kQuant) d = __builtin_fmaf(d, k[j].s1, k[j].m1 * qsum[g]);
      s[g][j0 + j] = (d + bias[g]) * scale;
    }
}

// The scores of rows [base, base + n) of one block for G heads (4 keys at a time with one or two heads, 2 with
// more, then the rest).
template <int G, typename KR>
inline void block_scores(const AttnTask& t, const float* const* q, int hd, const float* qsum, const void* cache,
                         const uint16_t* scales, const uint8_t* zeros, int64_t base, int n, float* const* s,
                         const float* bias) {
  constexpr int J = G <= 2 ? 4 : 2;
  int j = 0;
  for (; j + J <= n; j += J) {
    if constexpr (J == 4) {
      const KR k[4] = {KR(cache, scales, zeros, hd, base + j), KR(cache, scales, zeros, hd, base + j + 1),
                       KR(cache, scales, zeros, hd, base + j + 2), KR(cache, scales, zeros, hd, base + j + 3)};
      scores<G, 4>(q, k, hd, t.scale, qsum, s, j, bias);
    } else {
      const KR k[2] = {KR(cache, scales, zeros, hd, base + j), KR(cache, scales, zeros, hd, base + j + 1)};
      scores<G, 2>(q, k, hd, t.scale, qsum, s, j, bias);
    }
  }
  for (; j < n; ++j) {
    const KR k[1] = {KR(cache, scales, zeros, hd, base + j)};
    scores<G, 1>(q, k, hd, t.scale, qsum, s, j, bias);
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
  float run_max[G], denom[G], vbias[G], qsum[G], zeros_g[G];
  for (int g = 0; g < G; ++g) {
    if constexpr (NV > 0) {
      for (int v = 0; v < NV; ++v) racc[g][v] = zero();
    } else {
      for (int i = 0; i < hd; ++i) acc[g][i] = 0.0f;
    }
    run_max[g] = -__builtin_inff();
    denom[g] = 0.0f;
    vbias[g] = 0.0f;  // quantized V: sum_j p_j m1_j, added to every dim at the end
    qsum[g] = KR::kQuant ? sum_of(q[g], hd) : 0.0f;
    zeros_g[g] = 0.0f;
  }
  const int n_blocks = t.pos / bs + 1;
  for (int b = 0; b < n_blocks; ++b) {
    const int n = b == n_blocks - 1 ? t.pos - b * bs + 1 : bs;
    const int64_t base = (static_cast<int64_t>(t.block_table[b]) * t.n_kv_heads + t.kv_head) * bs;  // first row
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
      block_scores<G, KR>(t, q, hd, qsum, t.k, t.k_scales, t.k_zeros, base, n, s, zeros_g);
    }
    for (int g = 0; g < G; ++g) {
      float block_max = run_max[g];
      for (int j = 0; j < n; ++j) block_max = s[g][j] > block_max ? s[g][j] : block_max;
      if (block_max > run_max[g]) {
        const float corr = __builtin_expf(run_max[g] - block_max);  // 0 on the first block
        denom[g] *= corr;
        vbias[g] *= corr;
        const Vec cv = set1(corr);
        if constexpr (NV > 0) {
          for (int v = 0; v < NV; ++v) racc[g][v] = mul(racc[g][v], cv);
        } else {
          int i = 0;
          for (; i + kLanes <= hd; i += kLanes) store(acc[g] + i, mul(load(acc[g] + i), cv));
          for (; i < hd; ++i) acc[g][i] *= corr;
        }
        run_max[g] = block_max;
      }
      // The block's probabilities at once (exp_ps of the vector API), then summed in key order.
      const Vec vmax = set1(run_max[g]);
      int j = 0;
      for (; j + kLanes <= n; j += kLanes) store(s[g] + j, exp_ps(sub(load(s[g] + j), vmax)));
      if (j < n) store_tail(s[g] + j, tail_mask(n - j), exp_ps(sub(load_tail(s[g] + j, tail_mask(n - j)), vmax)));
    }
    for (int j = 0; j < n; ++j) {
      const VR vr(t.v, t.v_scales, t.v_zeros, hd, base + j);
      Vec pv[G];
      float pw[G];  // the weight of the row's vec() values
      for (int g = 0; g < G; ++g) {
        const float p = s[g][j];
        denom[g] += p;
        pw[g] = p;
        if constexpr (VR::kQuant) {
          pw[g] = p * vr.s1;
          vbias[g] = __builtin_fmaf(p, vr.m1, vbias[g]);
        }
        pv[g] = set1(pw[g]);
      }
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
            for (int g = 0; g < G; ++g) acc[g][i] += pw[g] * vr.one(i);
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    const float inv = 1.0f / denom[g];
    float* out = t.out + g * hd;
    if constexpr (NV > 0) {
      const Vec vb = set1(vbias[g]);
      for (int v = 0; v < NV; ++v)
        store(out + v * kLanes, mul(VR::kQuant ? add(racc[g][v], vb) : racc[g][v], set1(inv)));
    } else {
      for (int i = 0; i < hd; ++i) out[i] = (VR::kQuant ? acc[g][i] + vbias[g] : acc[g][i]) * inv;
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
