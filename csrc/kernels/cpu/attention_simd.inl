// Per-(token, head) paged attention, written once against the vector API of simd_avx2.h /
// simd_avx512.h (Vec, kLanes, load, fmadd, hsum, ...). Raw pointers and intrinsics only
// (see isa_kernels.h): no std:: helpers; the probabilities by exp_ps (within 2 ulp), the
// rescaling factor by the C library's expf.
//
// note: included by attention_avx2.cpp / attention_avx512.cpp inside their ISA namespace,
// after isa_kernels.h and their simd_*.h, so each ISA compiles its own copy with its own
// flags; never include it anywhere else. It includes nothing itself.

namespace {

// s[j] = scale * q . k_j for J keys at once (independent chains for the FMA
// pipes); each score's own FMA sequence is the same as with J = 1.
template <int J, typename T>
inline void scores(const float* q, const T* k, int hd, float scale, float* s) {  // k [J, hd], s [J]
  Vec acc[J];
  for (int j = 0; j < J; ++j) acc[j] = zero();
  int i = 0;
  for (; i + kLanes <= hd; i += kLanes) {
    const Vec qv = load(q + i);
    for (int j = 0; j < J; ++j) acc[j] = fmadd(qv, load(k + j * hd + i), acc[j]);
  }
  for (int j = 0; j < J; ++j) {
    float d = hsum(acc[j]);
    for (int t = i; t < hd; ++t) d += q[t] * load1(k + j * hd + t);
    s[j] = d * scale;
  }
}

// One (token, head): scores block by block, online softmax, P V. NV > 0: head_dim = NV * kLanes, with
// the accumulator in registers (each key's update does not wait on a store and reload of it); NV = 0:
// any head_dim, the accumulator in scratch. The same operations in the same order either way.
template <int NV, typename T>
void attend(const AttnTask& t, const T* kc, const T* vc) {  // kc, vc: the layer's cache
  const int hd = NV > 0 ? NV * kLanes : t.head_dim, bs = t.block_size;
  float* s = t.scratch;         // [block_size]
  float* acc = t.scratch + bs;  // [head_dim] (NV = 0)
  Vec racc[NV > 0 ? NV : 1];    // [NV] (NV > 0)
  if constexpr (NV > 0) {
    for (int v = 0; v < NV; ++v) racc[v] = zero();
  } else {
    for (int i = 0; i < hd; ++i) acc[i] = 0.0f;
  }
  float run_max = -__builtin_inff(), denom = 0.0f;
  const int n_blocks = t.pos / bs + 1;
  for (int b = 0; b < n_blocks; ++b) {
    const int n = b == n_blocks - 1 ? t.pos - b * bs + 1 : bs;
    const int64_t base = (static_cast<int64_t>(t.block_table[b]) * t.n_kv_heads + t.kv_head) * bs * hd;
    const T* kb = kc + base;  // [block_size, hd]
    const T* vb = vc + base;  // [block_size, hd]
    int j = 0;
    for (; j + 4 <= n; j += 4) scores<4>(t.q, kb + static_cast<int64_t>(j) * hd, hd, t.scale, s + j);
    for (; j < n; ++j) scores<1>(t.q, kb + static_cast<int64_t>(j) * hd, hd, t.scale, s + j);
    float block_max = run_max;
    for (j = 0; j < n; ++j) block_max = s[j] > block_max ? s[j] : block_max;
    if (block_max > run_max) {
      const float corr = __builtin_expf(run_max - block_max);  // 0 on the first block
      denom *= corr;
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
      const T* vr = vb + static_cast<int64_t>(j) * hd;
      const Vec pv = set1(p);
      if constexpr (NV > 0) {
        for (int v = 0; v < NV; ++v) racc[v] = fmadd(pv, load(vr + v * kLanes), racc[v]);
      } else {
        int i = 0;
        for (; i + kLanes <= hd; i += kLanes) store(acc + i, fmadd(pv, load(vr + i), load(acc + i)));
        for (; i < hd; ++i) acc[i] += p * load1(vr + i);
      }
    }
  }
  const float inv = 1.0f / denom;
  if constexpr (NV > 0) {
    for (int v = 0; v < NV; ++v) store(t.out + v * kLanes, mul(racc[v], set1(inv)));
  } else {
    for (int i = 0; i < hd; ++i) t.out[i] = acc[i] * inv;
  }
}

template <typename T>
void attend_dispatch(const AttnTask& t, const T* kc, const T* vc) {
  switch (t.head_dim % kLanes ? 0 : t.head_dim / kLanes) {
    case 1: return attend<1>(t, kc, vc);
    case 2: return attend<2>(t, kc, vc);
    case 3: return attend<3>(t, kc, vc);
    case 4: return attend<4>(t, kc, vc);
    case 5: return attend<5>(t, kc, vc);
    case 6: return attend<6>(t, kc, vc);
    case 8: return attend<8>(t, kc, vc);
    default: return attend<0>(t, kc, vc);
  }
}

// The dtype dispatch of attention_one.
inline void attend(const AttnTask& t) {
  if (t.dtype == kBF16)
    attend_dispatch(t, static_cast<const uint16_t*>(t.k), static_cast<const uint16_t*>(t.v));
  else
    attend_dispatch(t, static_cast<const float*>(t.k), static_cast<const float*>(t.v));
}

}  // namespace
