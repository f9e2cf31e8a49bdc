// hadamard_heads: the orthonormal Walsh-Hadamard rotation that int8 K rows get before they are quantized (ops.h);
// blocks of 16+ points by hadamard_avx512.cpp where AVX-512 is active (the same bits).
#include <cmath>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/ops.h"
#include "kernels/fwht.h"

namespace lmrt::cpu {

int hadamard_block(int head_dim) { return head_dim & -head_dim; }

void hadamard_heads(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim) {
  const int B = hadamard_block(head_dim);
  const float norm = 1.0f / std::sqrt(static_cast<float>(B));
  const int64_t width = static_cast<int64_t>(n_heads) * head_dim;
#ifdef LMRT_X86
  if (B >= 16 && active_isa() == Isa::Avx512) {  // the same bits, 16 lanes at a time
    for (int64_t m = 0; m < M; ++m) avx512::fwht_blocks(x + m * ldx, width / B, B, norm);
    return;
  }
#endif
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < width; b += B) fwht_block(x + m * ldx + b, B, norm);
}

}  // namespace lmrt::cpu
