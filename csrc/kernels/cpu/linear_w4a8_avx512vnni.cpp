// AVX-512 VNNI 4-bit x int8 product: linear_w4a8_simd.inl at 16 lanes with vpdpbusd (4 byte products summed into
// each int32 lane in one instruction). Compiled with -mavx512vnni; runs only where vnni_available(). Its
// quantizer is avx512::q8_quantize.
#include <cmath>
#include <cstring>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512vnni {
namespace {

using namespace lmrt::cpu::avx512;  // simd_avx512.h's vector API (in avx512's unnamed namespace)

#include "kernels/cpu/linear_w4a8_avx512.inl"

inline BVec dot4(BVec acc, BVec u, BVec s) { return _mm512_dpbusd_epi32(acc, u, s); }

}  // namespace

#include "kernels/cpu/linear_w4a8_il_avx512.inl"
#include "kernels/cpu/linear_w4a8_simd.inl"

void w4a8_tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const float* scales, const float* mins, int group_size,
               const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  tile<3, 4, 6, 8>(x, K, codes, scales, mins, group_size, bias, y, ldy, m0, m1, n0, n1);
}

void w4a8_il_tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const float* scales, const float* mins,
                  int group_size, const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0,
                  int64_t t1) {
  il_tile(x, K, codes, scales, mins, group_size, bias, y, ldy, m0, m1, t0, t1);
}

}  // namespace lmrt::cpu::avx512vnni
