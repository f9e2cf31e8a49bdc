// AVX-512 (F + BW + VL + DQ) int8 linear: linear_i8_simd.inl at the lane width of simd_avx512.h.
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

#include "kernels/cpu/linear_i8_simd.inl"

void i8_dequant(const int8_t* q, int64_t K, int64_t n0, int64_t n1, float* out) { dequant(q, K, n0, n1, out); }

void i8_tile(const float* x, int64_t ldx, int64_t K, const int8_t* q, float* y, int64_t ldy, int64_t m0, int64_t m1,
             int64_t n0, int64_t n1) {
  // 4x6: 24 accumulators + 6 W + 1 x of the 32 zmm registers.
  tile<6, 6, 6, 4>(x, ldx, K, q, y, ldy, m0, m1, n0, n1);
}

}  // namespace lmrt::cpu::avx512
