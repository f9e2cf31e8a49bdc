// The part of softmax_chunk (contract in isa_kernels.h) that attention_tiles_avx512.cpp and
// attention_tiles_avx512bf16.cpp share: one row's probabilities before they are rounded to bf16.
#pragma once

#include <cmath>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {
namespace {

constexpr int kChunkVecs = kKeyChunk / kLanes;  // a row's 64 keys: 4 vectors

// Row sr's e[v] = 2^(t - m) for its keys (t = s * scale2, scale2 = scale * log2(e) > 0, vscale its vector), 0 at
// and past key nv; m is raised to the row's max t where some key passes m + kSoftmaxSlack (always on its first
// chunk, m = -inf), the raw scores compared with (m + kSoftmaxSlack) / scale2. 2^(t - m) is exp2_bf16_ps of
// fma(s, scale2, -m): at most kSoftmaxSlack (plus rounding). Returns corr: 2^(m_old - m_new), 1 where m stays.
inline float softmax_row_exp(const float* sr, int nv, float scale2, Vec vscale, float* m, Vec e[kChunkVecs]) {
  Tail valid[kChunkVecs];
  Vec x[kChunkVecs];
  __mmask16 over = 0;
  const Vec bound = set1((*m + kSoftmaxSlack) / scale2);
  for (int v = 0; v < kChunkVecs; ++v) {
    const int left = nv - v * kLanes;
    valid[v] = left >= kLanes ? static_cast<Tail>(0xffff) : left <= 0 ? static_cast<Tail>(0) : tail_mask(left);
    x[v] = load(sr + v * kLanes);
    over |= _mm512_mask_cmp_ps_mask(valid[v], x[v], bound, _CMP_GT_OQ);
  }
  float c = 1.0f;
  if (over) {
    Vec vmax = set1(-INFINITY);
    for (int v = 0; v < kChunkVecs; ++v) vmax = _mm512_mask_max_ps(vmax, valid[v], vmax, x[v]);
    const float mx = _mm512_reduce_max_ps(vmax) * scale2;  // max(s) * scale2 = max(s * scale2): rounding is monotone
    c = __builtin_exp2f(*m - mx);                          // 0 on a row's first chunk (m = -inf)
    *m = mx;
  }
  const Vec neg_m = set1(-*m);
  for (int v = 0; v < kChunkVecs; ++v) {
    if (!valid[v]) {
      e[v] = zero();
      continue;
    }
    const Vec p = exp2_bf16_ps(_mm512_fmadd_ps(x[v], vscale, neg_m));
    e[v] = valid[v] == static_cast<Tail>(0xffff) ? p : _mm512_maskz_mov_ps(valid[v], p);
  }
  return c;
}

}  // namespace
}  // namespace lmrt::cpu::avx512
