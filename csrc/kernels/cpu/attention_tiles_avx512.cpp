// AVX-512 helpers of paged_attention_tiles: the online-softmax chunk and the accumulator update
// (contracts in isa_kernels.h; scalar versions in attention_tiles.cpp).
#include <cmath>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

void softmax_chunk(const float* s, const int32_t* n_valid, int64_t R, float scale, float* m, float* l, uint16_t* p,
                   float* corr) {
  static_assert(kSoftmaxLanes == kLanes, "l's partial sums are one vector");
  constexpr int kVecs = kKeyChunk / kLanes;
  const Vec vscale = set1(scale * kLog2e);
  for (int64_t r = 0; r < R; ++r) {
    const float* sr = s + r * kKeyChunk;  // [64]
    uint16_t* pr = p + r * kKeyChunk;     // [64]
    float* lr = l + r * kLanes;           // [16]
    const int nv = n_valid[r];
    Tail valid[kVecs];
    Vec x[kVecs];
    __mmask16 over = 0;  // lanes past m + slack: the chunk's max is needed (always on the first chunk: m = -inf)
    const Vec bound = set1(m[r] + kSoftmaxSlack);
    for (int v = 0; v < kVecs; ++v) {
      const int left = nv - v * kLanes;
      valid[v] = left >= kLanes ? static_cast<Tail>(0xffff) : left <= 0 ? static_cast<Tail>(0) : tail_mask(left);
      x[v] = mul(load(sr + v * kLanes), vscale);
      over |= _mm512_mask_cmp_ps_mask(valid[v], x[v], bound, _CMP_GT_OQ);
    }
    float c = 1.0f;
    if (over) {
      Vec vmax = set1(-INFINITY);
      for (int v = 0; v < kVecs; ++v) vmax = _mm512_mask_max_ps(vmax, valid[v], vmax, x[v]);
      const float mx = _mm512_reduce_max_ps(vmax);
      c = __builtin_exp2f(m[r] - mx);  // 0 on a row's first chunk (m = -inf)
      m[r] = mx;
    }
    const Vec neg_m = set1(-m[r]);
    Vec sum = zero();
    for (int v = 0; v < kVecs; ++v) {
      if (!valid[v]) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(pr + v * kLanes), _mm256_setzero_si256());
        continue;
      }
      const IVec b = round_bf16_finite(_mm512_maskz_mov_ps(valid[v], exp2_ps(_mm512_add_ps(x[v], neg_m))));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(pr + v * kLanes), _mm512_cvtepi32_epi16(b));
      sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(b, 16)));
    }
    store(lr, _mm512_add_ps(_mm512_mul_ps(load(lr), set1(c)), sum));
    corr[r] = c;
  }
}

void acc_scale(float* o, const float* corr, int64_t R, int64_t n) {
  for (int64_t r = 0; r < R; ++r) {
    if (corr[r] == 1.0f) continue;
    float* orow = o + r * n;  // [n]
    const Vec c = set1(corr[r]);
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) store(orow + i, mul(load(orow + i), c));
    if (i < n) {
      const Tail t = tail_mask(static_cast<int>(n - i));
      store_tail(orow + i, t, mul(load_tail(orow + i, t), c));
    }
  }
}

}  // namespace lmrt::cpu::avx512
