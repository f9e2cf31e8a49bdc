// AVX2 + FMA linear tile: linear_simd.inl at the lane width of simd_avx2.h.
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx2.h"

namespace lmrt::cpu::avx2 {

#include "kernels/cpu/linear_simd.inl"

void linear_tile(const float* x, int64_t ldx, int64_t K, const void* w, int wdt, const float* bias, float* y,
                 int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  // 4x3 uses 12 accumulators + 3 W + 1 x = all 16 ymm registers.
  tile_any_dtype<3>(x, ldx, K, w, wdt, bias, y, ldy, m0, m1, n0, n1);
}

}  // namespace lmrt::cpu::avx2
