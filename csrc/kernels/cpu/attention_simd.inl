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

template <typename T>
void attend(const AttnTask& t, const T* kc, const T* vc) {  // kc, vc: the layer's cache
  const int hd = t.head_dim, bs = t.block_size;
  float* s = t.scratch;         // [block_size]
  float* acc = t.scratch + bs;  // [head_dim]
  for (int i = 0; i < hd; ++i) acc[i] = 0.0f;
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
      int i = 0;
      for (; i + kLanes <= hd; i += kLanes) store(acc + i, mul(load(acc + i), cv));
      for (; i < hd; ++i) acc[i] *= corr;
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
      int i = 0;
      for (; i + kLanes <= hd; i += kLanes) store(acc + i, fmadd(pv, load(vr + i), load(acc + i)));
      for (; i < hd; ++i) acc[i] += p * load1(vr + i);
    }
  }
  const float inv = 1.0f / denom;
  for (int i = 0; i < hd; ++i) t.out[i] = acc[i] * inv;
}

// attend() for head_dim = NV * kLanes, with the accumulator in registers: the same operations in the
// same order (so the same bits), but each key's P V update no longer waits on a store and reload of
// the accumulator.
template <int NV, typename T>
void attend_regs(const AttnTask& t, const T* kc, const T* vc) {
  const int hd = NV * kLanes, bs = t.block_size;
  float* s = t.scratch;  // [block_size]
  Vec acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = zero();
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
      for (int v = 0; v < NV; ++v) acc[v] = mul(acc[v], cv);
      run_max = block_max;
    }
    const Vec vmax = set1(run_max);
    for (j = 0; j + kLanes <= n; j += kLanes) store(s + j, exp_ps(sub(load(s + j), vmax)));
    if (j < n) store_tail(s + j, tail_mask(n - j), exp_ps(sub(load_tail(s + j, tail_mask(n - j)), vmax)));
    for (j = 0; j < n; ++j) {
      const float p = s[j];
      denom += p;
      const T* vr = vb + static_cast<int64_t>(j) * hd;
      const Vec pv = set1(p);
      for (int v = 0; v < NV; ++v) acc[v] = fmadd(pv, load(vr + v * kLanes), acc[v]);
    }
  }
  const Vec inv = set1(1.0f / denom);
  for (int v = 0; v < NV; ++v) store(t.out + v * kLanes, mul(acc[v], inv));
}

template <typename T>
void attend_dispatch(const AttnTask& t, const T* kc, const T* vc) {
  if (t.head_dim % kLanes == 0) {
    switch (t.head_dim / kLanes) {
      case 1: return attend_regs<1>(t, kc, vc);
      case 2: return attend_regs<2>(t, kc, vc);
      case 3: return attend_regs<3>(t, kc, vc);
      case 4: return attend_regs<4>(t, kc, vc);
      case 6: return attend_regs<6>(t, kc, vc);
      case 8: return attend_regs<8>(t, kc, vc);
      default: break;
    }
  }
  attend(t, kc, vc);
}

// The dtype dispatch of attention_one.
inline void attend(const AttnTask& t) {
  if (t.dtype == kBF16)
    attend_dispatch(t, static_cast<const uint16_t*>(t.k), static_cast<const uint16_t*>(t.v));
  else
    attend_dispatch(t, static_cast<const float*>(t.k), static_cast<const float*>(t.v));
}

}  // namespace
