#include <cmath>
#include <vector>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

// Matches HF LlamaRotaryEmbedding + apply_rotary_pos_emb in fp32:
//   angle = float(pos) * inv_freq[i];  c = cos(angle) * scale;  s = sin(angle) * scale
//   x1' = x1 * c - x2 * s;  x2' = x2 * c + x1 * s   (x1 = x[:half], x2 = x[half:])
// The cos/sin of a token are shared by all its heads, and by every layer (LlamaModel computes them once a step).
void rope_factors(const int32_t* pos, int64_t M, const float* inv_freq, int head_dim, float attn_scale, float* cs) {
  const int half = head_dim / 2;
  for (int64_t m = 0; m < M; ++m) {
    const float p = static_cast<float>(pos[m]);
    float* c = cs + m * head_dim;  // [half] cos, then [half] sin
    for (int i = 0; i < half; ++i) {
      const float a = p * inv_freq[i];
      c[i] = std::cos(a) * attn_scale;
      c[half + i] = std::sin(a) * attn_scale;
    }
  }
}

void scalar::rope_apply(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const float* cs) {
  const int half = head_dim / 2;
  for (int64_t m = 0; m < M; ++m) {
    const float* c = cs + m * head_dim;  // [half]
    const float* s = c + half;           // [half]
    for (int h = 0; h < n_heads; ++h) {
      float* xh = x + m * ldx + static_cast<int64_t>(h) * head_dim;  // [head_dim]
      for (int i = 0; i < half; ++i) {
        const float x1 = xh[i], x2 = xh[i + half];
        // Separate roundings of each product, like torch's q * cos + rotate_half(q) * sin.
        const float a1 = x1 * c[i], b1 = x2 * s[i], a2 = x2 * c[i], b2 = x1 * s[i];
        xh[i] = a1 - b1;
        xh[i + half] = a2 + b2;
      }
    }
  }
}

void rope_apply(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const float* cs) {
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) return avx512::rope_apply(x, M, ldx, n_heads, head_dim, cs);
#endif
  scalar::rope_apply(x, M, ldx, n_heads, head_dim, cs);
}

void rope(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq,
          float attn_scale) {
  std::vector<float> cs(head_dim);
  for (int64_t m = 0; m < M; ++m) {
    rope_factors(pos + m, 1, inv_freq, head_dim, attn_scale, cs.data());
    rope_apply(x + m * ldx, 1, ldx, n_heads, head_dim, cs.data());
  }
}

}  // namespace lmrt::cpu
