#include <cstring>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/kv_quant.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

int64_t kv_row_bytes(KVDType dt, int head_dim) {
  switch (dt) {
    case KVDType::F32: return 4 * static_cast<int64_t>(head_dim);
    case KVDType::BF16: return 2 * static_cast<int64_t>(head_dim);
    case KVDType::I8: return head_dim;
    case KVDType::I4: return head_dim / 2;
  }
  return 0;
}

namespace {

// Row `row` of one cache (k or v) from x [head_dim].
void store_row(void* cache, uint16_t* scales, uint8_t* zeros, KVDType dt, int hd, int64_t row, const float* x) {
  char* dst = static_cast<char*>(cache) + row * kv_row_bytes(dt, hd);
  switch (dt) {
    case KVDType::F32: std::memcpy(dst, x, static_cast<size_t>(hd) * sizeof(float)); return;
    case KVDType::BF16: {
      uint16_t* d = reinterpret_cast<uint16_t*>(dst);
      for (int i = 0; i < hd; ++i) d[i] = f32_to_bf16_bits(x[i]);
      return;
    }
    case KVDType::I8:
    case KVDType::I4: kv_quantize_row(x, hd, dt, reinterpret_cast<uint8_t*>(dst), scales + row, zeros + row); return;
  }
}

}  // namespace

void kv_store(const KVLayer& kv, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t M,
              const int64_t* slot) {
  const int64_t hd = kv.head_dim, bs = kv.block_size;
  for (int64_t m = 0; m < M; ++m) {
    const int64_t block = slot[m] / bs, off = slot[m] % bs;
    for (int64_t h = 0; h < kv.n_kv_heads; ++h) {
      const int64_t row = (block * kv.n_kv_heads + h) * bs + off;
      store_row(kv.k, kv.k_scales, kv.k_zeros, kv.k_dtype, kv.head_dim, row, k + m * ldk + h * hd);
      store_row(kv.v, kv.v_scales, kv.v_zeros, kv.v_dtype, kv.head_dim, row, v + m * ldv + h * hd);
    }
  }
}

}  // namespace lmrt::cpu
