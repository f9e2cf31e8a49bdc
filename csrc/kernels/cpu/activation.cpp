#include <cmath>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

// silu(g) = g / (1 + exp(-g)) as in torch; exp(-g) overflowing to inf gives -0/+0, the limit.
void scalar::silu_mul_row(const float* g, const float* u, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void scalar::silu_mul_pairs(const float* c, int64_t ldc, uint16_t* out, int64_t ldo) {
  for (int64_t m = 0; m < 32; ++m) {
    float row[16];
    silu_mul_row(c + m * ldc, c + m * ldc + 16, 16, row);  // gates [16], then their ups [16]
    for (int n = 0; n < 16; ++n) out[m * ldo + n] = f32_to_bf16_bits(row[n]);
  }
}

void silu_mul(const float* gu, int64_t M, int64_t I, int64_t ldg, float* out, int64_t ldo) {
  SiluMulFn row = scalar::silu_mul_row;
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) row = avx512::silu_mul_row;
#endif
  for (int64_t m = 0; m < M; ++m) row(gu + m * ldg, gu + m * ldg + I, I, out + m * ldo);  // gate [I], then up [I]
}

}  // namespace lmrt::cpu
