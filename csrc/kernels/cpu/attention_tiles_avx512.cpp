// AVX-512 helpers of paged_attention_tiles: the online-softmax chunk and the accumulator update
// (contracts in isa_kernels.h; scalar versions in attention_tiles.cpp).
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

void softmax_chunk(const float* s, const int32_t* n_valid, int64_t R, float scale, float* m, float* l, uint16_t* p,
                   float* corr) {
  constexpr int kVecs = kKeyChunk / kLanes;
  const Vec vscale = set1(scale);
  for (int64_t r = 0; r < R; ++r) {
    const float* sr = s + r * kKeyChunk;  // [64]
    uint16_t* pr = p + r * kKeyChunk;     // [64]
    const int nv = n_valid[r];
    Tail valid[kVecs];
    for (int v = 0; v < kVecs; ++v) {
      const int left = nv - v * kLanes;
      valid[v] = left >= kLanes ? static_cast<Tail>(0xffff) : left <= 0 ? static_cast<Tail>(0) : tail_mask(left);
    }
    if (nv <= 0) {
      for (int v = 0; v < kVecs; ++v)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(pr + v * kLanes), _mm256_setzero_si256());
      corr[r] = 1.0f;
      continue;
    }
    Vec x[kVecs];
    Vec vmax = set1(m[r]);
    for (int v = 0; v < kVecs; ++v) {
      x[v] = mul(load(sr + v * kLanes), vscale);
      vmax = _mm512_mask_max_ps(vmax, valid[v], vmax, x[v]);
    }
    const float mx = _mm512_reduce_max_ps(vmax);
    const Vec neg_mx = set1(-mx);
    Vec sum = zero();
    for (int v = 0; v < kVecs; ++v) {
      const Vec e = _mm512_maskz_mov_ps(valid[v], exp_ps(_mm512_add_ps(x[v], neg_mx)));
      const IVec b = round_bf16(e);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(pr + v * kLanes), _mm512_cvtepi32_epi16(b));
      sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(b, 16)));
    }
    const float c = __builtin_expf(m[r] - mx);  // 0 on a row's first chunk (m = -inf)
    l[r] = l[r] * c + _mm512_reduce_add_ps(sum);
    m[r] = mx;
    corr[r] = c;
  }
}

void acc_update(float* o, const float* pv, const float* corr, int64_t R, int64_t n) {
  for (int64_t r = 0; r < R; ++r) {
    float* orow = o + r * n;         // [n]
    const float* prow = pv + r * n;  // [n]
    const Vec c = set1(corr[r]);
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) store(orow + i, fmadd(load(orow + i), c, load(prow + i)));
    if (i < n) {
      const Tail t = tail_mask(static_cast<int>(n - i));
      store_tail(orow + i, t, fmadd(load_tail(orow + i, t), c, load_tail(prow + i, t)));
    }
  }
}

}  // namespace lmrt::cpu::avx512
