// linear_w4: validation, ISA dispatch, and the scalar dequantisation.
//
// y = x w^T (+ bias) with w[n, k] = code[n, k] * scale[n, g] + min[n, g], g = k / group_size.
// Each w is formed in fp32 as fma(float(code), scale, min) (one rounding, so within u|w| of
// the exact dequantised weight) and then reduced exactly like linear() reduces an fp32
// weight: per ISA one lane pattern over ascending K chunks and one fixed horizontal sum.
// The decode tile (in-register dequantisation) and the prefill path (dequantise a block of
// rows into a per-thread buffer, then the fp32 tile) therefore give identical bits, and
// the op is batch invariant like linear().
//
// note: the factorised form sum_g scale * (sum_k code * x) + sum_g min * xsum was the
// alternative; it needs two accumulators per output (group and total), which halves the
// register blocking on AVX2, and its rounding error scales with sum |min * xsum| rather
// than sum |w * x| (AWQ-style min = -zero * scale cancels heavily).
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_linear.h"

namespace lmrt::cpu {

namespace scalar {

void w4_dequant(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K, int64_t n0,
                int64_t n1, float* out) {
  const int64_t G = K / group_size;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* c = codes + n * (K / 2);
    float* o = out + (n - n0) * K;
    for (int64_t k = 0; k < K; k += 32) {  // one run of 32 inputs = 16 bytes
      const int64_t g = k / group_size;
      const float s = scales[n * G + g], mn = mins[n * G + g];
      for (int j = 0; j < 16; ++j) {
        const uint8_t b = c[k / 2 + j];
        o[k + j] = std::fma(static_cast<float>(b & 0x0F), s, mn);
        o[k + j + 16] = std::fma(static_cast<float>(b >> 4), s, mn);
      }
    }
  }
}

}  // namespace scalar

namespace {

struct W4Path {
  LinearTileFn tile;
  W4DequantFn dequant;
  W4TileFn fused;  // nullptr: always the buffer path
};

W4Path w4_path(Isa isa) {
#ifdef LMRT_X86
  if (isa == Isa::Avx512) return {avx512::linear_tile, avx512::w4_dequant, avx512::w4_tile};
  if (isa == Isa::Avx2) return {avx2::linear_tile, avx2::w4_dequant, avx2::w4_tile};
#endif
  return {scalar::linear_tile, scalar::w4_dequant, nullptr};
}

}  // namespace

void linear_w4(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const W4Matrix& w, int64_t N,
               const float* bias, float* y, int64_t ldy) {
  const int gs = w.group_size;
  if (gs != 32 && gs != 64 && gs != 128)
    throw std::invalid_argument("linear_w4: group_size must be 32, 64 or 128, got " + std::to_string(gs));
  if (K <= 0 || K % gs != 0)
    throw std::invalid_argument("linear_w4: K must be a positive multiple of group_size " + std::to_string(gs) +
                                ", got " + std::to_string(K));
  if (M <= 0 || N <= 0) return;
  const W4Path p = w4_path(active_isa());
  quant::run(
      pool, x, M, K, ldx, N, bias, y, ldy, p.tile,
      [&](int64_t n0, int64_t n1, float* out) { p.dequant(w.codes, w.scales, w.mins, gs, K, n0, n1, out); },
      [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
        p.fused(x, ldx, K, w.codes, w.scales, w.mins, gs, bias, y, ldy, m0, m1, n0, n1);
      },
      p.fused != nullptr, [](int64_t, int64_t, int64_t, int64_t) {});
}

}  // namespace lmrt::cpu
