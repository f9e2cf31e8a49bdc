#include <cstring>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

void kv_store(const KVLayer& kv, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t M,
              const int64_t* slot) {
  const int64_t hd = kv.head_dim, bs = kv.block_size;
  for (int64_t m = 0; m < M; ++m) {
    const int64_t block = slot[m] / bs, off = slot[m] % bs;
    for (int64_t h = 0; h < kv.n_kv_heads; ++h) {
      const int64_t dst = ((block * kv.n_kv_heads + h) * bs + off) * hd;
      const float* ks = k + m * ldk + h * hd;  // [head_dim]
      const float* vs = v + m * ldv + h * hd;  // [head_dim]
      if (kv.dtype == DType::BF16) {
        uint16_t* kd = static_cast<uint16_t*>(kv.k) + dst;
        uint16_t* vd = static_cast<uint16_t*>(kv.v) + dst;
        for (int64_t i = 0; i < hd; ++i) {
          kd[i] = f32_to_bf16_bits(ks[i]);
          vd[i] = f32_to_bf16_bits(vs[i]);
        }
      } else {
        std::memcpy(static_cast<float*>(kv.k) + dst, ks, hd * sizeof(float));
        std::memcpy(static_cast<float*>(kv.v) + dst, vs, hd * sizeof(float));
      }
    }
  }
}

}  // namespace lmrt::cpu
