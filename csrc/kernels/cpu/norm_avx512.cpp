// rmsnorm with AVX-512 F: a row's sum of squares in one 16-lane vector (RmsnormSig's order, so scalar::rmsnorm's
// bits), four rows at a time; rmsnorm_bf16 rounds the result to bf16 as it stores (the prefill's tile input).
// The products and sums are the _round intrinsics (builtins the compiler does not fuse into an fma: this file is
// built with -mfma, the baseline without it).
#include <cmath>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

namespace {

constexpr int kCur = _MM_FROUND_CUR_DIRECTION;
constexpr int kRows = 4;  // rows together: independent chains of adds

inline Vec sq_mul(Vec a, Vec b) { return _mm512_mul_round_ps(a, b, kCur); }
inline Vec sq_add(Vec a, Vec b) { return _mm512_add_round_ps(a, b, kCur); }

// The lanes summed as a tree: (l, l + 8), (l, l + 4), (l, l + 2), (0, 1).
inline float tree_sum(Vec v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 d = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)));
}

// Rows [0, R) of x: each row's 1 / sqrt(ss / H + eps) into rs.
template <int R>
inline void row_scales(const float* x, int64_t H, int64_t ldx, float eps, float* rs) {
  Vec acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= H; i += kLanes)
    for (int r = 0; r < R; ++r) {
      const Vec v = load(x + r * ldx + i);
      acc[r] = sq_add(acc[r], sq_mul(v, v));
    }
  if (i < H) {
    const Tail t = tail_mask(static_cast<int>(H - i));
    for (int r = 0; r < R; ++r) {
      const Vec v = load_tail(x + r * ldx + i, t);  // zeros past H: + 0 leaves a lane as it is
      acc[r] = sq_add(acc[r], sq_mul(v, v));
    }
  }
  for (int r = 0; r < R; ++r) rs[r] = 1.0f / std::sqrt(tree_sum(acc[r]) / static_cast<float>(H) + eps);
}

// store(j, value, tail) writes elements [j, j + 16) of the row (tail: the lanes that exist).
template <int R, class Store>
inline void norm_rows(const float* x, int64_t H, int64_t ldx, const float* w, float eps, const Store& store) {
  float rs[R];
  row_scales<R>(x, H, ldx, eps, rs);
  for (int r = 0; r < R; ++r) {
    const Vec s = _mm512_set1_ps(rs[r]);
    for (int64_t j = 0; j < H; j += kLanes) {
      const Tail t = H - j >= kLanes ? Tail(0xffff) : tail_mask(static_cast<int>(H - j));
      store(r, j, sq_mul(load_tail(w + j, t), sq_mul(load_tail(x + r * ldx + j, t), s)), t);
    }
  }
}

template <class Store>
inline void norm_all(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, const Store& store) {
  int64_t m = 0;
  for (; m + kRows <= M; m += kRows)
    norm_rows<kRows>(x + m * ldx, H, ldx, w, eps, [&](int r, int64_t j, Vec v, Tail t) { store(m + r, j, v, t); });
  for (; m < M; ++m)
    norm_rows<1>(x + m * ldx, H, ldx, w, eps, [&](int, int64_t j, Vec v, Tail t) { store(m, j, v, t); });
}

}  // namespace

void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y, int64_t ldy) {
  norm_all(x, M, H, ldx, w, eps,
           [&](int64_t m, int64_t j, Vec v, Tail t) { _mm512_mask_storeu_ps(y + m * ldy + j, t, v); });
}

void rmsnorm_bf16(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, uint16_t* y,
                  int64_t ldy) {
  norm_all(x, M, H, ldx, w, eps, [&](int64_t m, int64_t j, Vec v, Tail t) {
    _mm512_mask_cvtepi32_storeu_epi16(y + m * ldy + j, t, round_bf16(v));
  });
}

}  // namespace lmrt::cpu::avx512
