// AVX2 + FMA int8 linear: linear_i8_simd.inl at the lane width of simd_avx2.h.
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx2.h"

namespace lmrt::cpu::avx2 {

#include "kernels/cpu/linear_i8_simd.inl"

void i8_dequant(const int8_t* q, int64_t K, int64_t n0, int64_t n1, float* out) { dequant(q, K, n0, n1, out); }

void i8_tile(const float* x, int64_t ldx, int64_t K, const int8_t* q, float* y, int64_t ldy, int64_t m0, int64_t m1,
             int64_t n0, int64_t n1) {
  // 4x3: 12 accumulators + 3 W + 1 x = all 16 ymm registers.
  tile<3, 3, 4, 4>(x, ldx, K, q, y, ldy, m0, m1, n0, n1);
}

}  // namespace lmrt::cpu::avx2
