// AVX-512 helpers of paged_attention_tiles: the online-softmax chunk and the accumulator rescale
// (contracts in isa_kernels.h; scalar versions in attention_tiles.cpp).
#include <cmath>

#include "kernels/cpu/attention_tiles_avx512.inl"
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

void softmax_chunk(const float* s, const int32_t* n_valid, int64_t R, float scale, float* m, float* l, uint16_t* p,
                   float* corr) {
  static_assert(kSoftmaxLanes == kLanes, "l's partial sums are one vector");
  const float scale2 = scale * kLog2e;
  const Vec vscale = set1(scale2);
  for (int64_t r = 0; r < R; ++r) {
    uint16_t* pr = p + r * kKeyChunk;  // [64]
    float* lr = l + r * kLanes;        // [16]
    Vec e[kChunkVecs];
    const float c = softmax_row_exp(s + r * kKeyChunk, n_valid[r], scale2, vscale, m + r, e);
    Vec sum = zero();
    for (int v = 0; v < kChunkVecs; ++v) {
      const IVec b = round_bf16_finite(e[v]);
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
