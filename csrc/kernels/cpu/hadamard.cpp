// hadamard_heads: the orthonormal Walsh-Hadamard rotation that int8 K rows get before they are quantized (ops.h).
#include <cmath>

#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

int hadamard_block(int head_dim) { return head_dim & -head_dim; }

// In-place fast Walsh-Hadamard transform of each block (Sylvester order: H_2n = [[H_n, H_n], [H_n, -H_n]]),
// scaled by 1 / sqrt(B). The first two levels run together as 4-point transforms on each run of 4; the later
// levels pair runs of len >= 4 contiguous floats, which the compiler vectorizes; the scale rides on the last one.
void hadamard_heads(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim) {
  const int B = hadamard_block(head_dim);
  const float norm = 1.0f / std::sqrt(static_cast<float>(B));
  const int64_t width = static_cast<int64_t>(n_heads) * head_dim;
  for (int64_t m = 0; m < M; ++m) {
    float* row = x + m * ldx;
    for (int64_t b = 0; b < width; b += B) {
      float* v = row + b;  // [B]
      if (B == 1) continue;
      if (B == 2) {
        const float a = v[0], c = v[1];
        v[0] = (a + c) * norm;
        v[1] = (a - c) * norm;
        continue;
      }
      const float s4 = B == 4 ? norm : 1.0f;
      for (int i = 0; i < B; i += 4) {  // levels len = 1 and 2
        const float a = v[i], c = v[i + 1], d = v[i + 2], e = v[i + 3];
        const float p = a + c, q = a - c, r = d + e, t = d - e;
        v[i] = (p + r) * s4;
        v[i + 1] = (q + t) * s4;
        v[i + 2] = (p - r) * s4;
        v[i + 3] = (q - t) * s4;
      }
      for (int len = 4; len < B; len <<= 1) {
        const float s = 2 * len == B ? norm : 1.0f;
        for (int i = 0; i < B; i += 2 * len) {
          float* lo = v + i;
          float* hi = v + i + len;
          for (int j = 0; j < len; ++j) {
            const float a = lo[j], c = hi[j];
            lo[j] = (a + c) * s;
            hi[j] = (a - c) * s;
          }
        }
      }
    }
  }
}

}  // namespace lmrt::cpu
