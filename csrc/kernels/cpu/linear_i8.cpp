// linear_i8: ISA dispatch and the scalar dequantisation.
//
// y[m, n] = scale[n] * (sum_k x[m, k] * float(q[n, k])) + bias[n]. float(q) is exact, so the
// dot is the fp32 linear() reduction over exact weights (same lanes, chunk order and
// horizontal sum per ISA); the per-row scale and the bias are applied afterwards, here, by
// one piece of code for every path. The decode tile (in-register conversion) and the
// prefill path (convert a block of rows into a per-thread buffer, then the fp32 tile) give
// identical bits, so the op is batch invariant like linear().
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_linear.h"

namespace lmrt::cpu {

namespace scalar {

void i8_dequant(const int8_t* q, int64_t K, int64_t n0, int64_t n1, float* out) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t k = 0; k < K; ++k) out[(n - n0) * K + k] = static_cast<float>(q[n * K + k]);
}

}  // namespace scalar

namespace {

struct I8Path {
  LinearTileFn tile;
  I8DequantFn dequant;
  I8TileFn fused;  // nullptr: always the buffer path
};

I8Path i8_path(Isa isa) {
#ifdef LMRT_X86
  if (isa == Isa::Avx512) return {avx512::linear_tile, avx512::i8_dequant, avx512::i8_tile};
  if (isa == Isa::Avx2) return {avx2::linear_tile, avx2::i8_dequant, avx2::i8_tile};
#endif
  return {scalar::linear_tile, scalar::i8_dequant, nullptr};
}

}  // namespace

void linear_i8(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const I8Matrix& w, int64_t N,
               const float* bias, float* y, int64_t ldy) {
  if (M <= 0 || N <= 0) return;
  const I8Path p = i8_path(active_isa());
  // Each block scales its own outputs right after computing them (still in cache).
  auto finish = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t n = n0; n < n1; ++n) {
        const float t = y[m * ldy + n] * w.scales[n];
        y[m * ldy + n] = bias ? t + bias[n] : t;
      }
  };
  quant::run(
      pool, x, M, K, ldx, N, nullptr, y, ldy, p.tile,
      [&](int64_t n0, int64_t n1, float* out) { p.dequant(w.q, K, n0, n1, out); },
      [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) { p.fused(x, ldx, K, w.q, y, ldy, m0, m1, n0, n1); },
      p.fused != nullptr, finish);
}

}  // namespace lmrt::cpu
