#include <cmath>

#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

// silu(g) = g / (1 + exp(-g)) as in torch; exp(-g) overflowing to inf gives -0/+0, the limit.
void silu_mul(const float* gu, int64_t M, int64_t I, int64_t ldg, float* out, int64_t ldo) {
  for (int64_t m = 0; m < M; ++m) {
    const float* g = gu + m * ldg;  // [I] gate, followed by [I] up
    float* o = out + m * ldo;       // [I]
    for (int64_t i = 0; i < I; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * g[I + i];
  }
}

}  // namespace lmrt::cpu
