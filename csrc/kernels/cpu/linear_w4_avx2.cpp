// AVX2 + FMA 4-bit linear: linear_w4_simd.inl at the lane width of simd_avx2.h.
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx2.h"

namespace lmrt::cpu::avx2 {

#include "kernels/cpu/linear_w4_simd.inl"

void w4_dequant(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K, int64_t n0,
                int64_t n1, float* out) {
  dequant(codes, scales, mins, group_size, K, n0, n1, out);
}

void w4_tile(const float* x, int64_t ldx, int64_t K, const uint8_t* codes, const float* scales, const float* mins,
             int group_size, const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  // 4x2: 8 accumulators + 4 dequantised W + x + scale/min of the 16 ymm registers.
  tile<2, 2, 3, 4>(x, ldx, K, codes, scales, mins, group_size, bias, y, ldy, m0, m1, n0, n1);
}

}  // namespace lmrt::cpu::avx2
