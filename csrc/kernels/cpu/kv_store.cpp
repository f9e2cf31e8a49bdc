#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/kv_quant.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

namespace {

// A quantized row's two loops on the active ISA (the same results on every path; isa_kernels.h).
struct RowLoops {
  KVRowRangeFn range = kv_row_range;
  KVRowCodesFn codes = kv_row_codes;
};

RowLoops row_loops() {
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) return {avx512::kv_row_range, avx512::kv_row_codes};
#endif
  return {};
}

// Row `row` of one cache (k or v) from x [head_dim].
void store_row(void* cache, uint16_t* scales, uint8_t* zeros, KVDType dt, int hd, int64_t row, const float* x,
               const RowLoops& loops) {
  char* dst = static_cast<char*>(cache) + row * kv_row_bytes(dt, hd);
  switch (dt) {
    case KVDType::F32: std::memcpy(dst, x, static_cast<size_t>(hd) * sizeof(float)); return;
    case KVDType::BF16: {
      uint16_t* d = reinterpret_cast<uint16_t*>(dst);
      for (int i = 0; i < hd; ++i) d[i] = f32_to_bf16_bits(x[i]);
      return;
    }
    case KVDType::I8:
    case KVDType::I4:
      kv_quantize_row(x, hd, dt, reinterpret_cast<uint8_t*>(dst), scales + row, zeros + row, loops.range, loops.codes);
      return;
    case KVDType::I4Channel: throw std::logic_error("kv_store: I4Channel rows are staged, not stored");
  }
}

}  // namespace

void kv_store(const KVLayer& kv, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t M,
              const int64_t* slot, int h0, int h1) {
  if (h1 < 0) h1 = kv.n_kv_heads;
  if (h0 < 0 || h0 > h1 || h1 > kv.n_kv_heads)
    throw std::invalid_argument("kv_store: heads [" + std::to_string(h0) + ", " + std::to_string(h1) +
                                ") outside the cache's " + std::to_string(kv.n_kv_heads) + " KV heads");
  const int64_t hd = kv.head_dim, bs = kv.block_size;
  const bool staged = kv.k_dtype == KVDType::I4Channel;
  const RowLoops loops = row_loops();
  for (int64_t m = 0; m < M; ++m) {
    const int64_t block = slot[m] / bs, off = slot[m] % bs;
    const int64_t stage = staged ? kv.stage_of_block[block] : -1;
    if (staged && stage < 0)
      throw std::logic_error("kv_store: block " + std::to_string(block) + " has no staging slot for its int4 K rows");
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t row = (block * kv.n_kv_heads + h) * bs + off;
      if (staged)
        store_row(kv.k_stage, kv.k_stage_scales, kv.k_stage_zeros, KVDType::I8, kv.head_dim,
                  (stage * kv.n_kv_heads + h) * bs + off, k + m * ldk + h * hd, loops);
      else
        store_row(kv.k, kv.k_scales, kv.k_zeros, kv.k_dtype, kv.head_dim, row, k + m * ldk + h * hd, loops);
      store_row(kv.v, kv.v_scales, kv.v_zeros, kv.v_dtype, kv.head_dim, row, v + m * ldv + h * hd, loops);
    }
  }
}

void kv_seal(const KVLayer& kv, const int32_t* blocks, int64_t num) {
  if (kv.k_dtype != KVDType::I4Channel) return;
  const int hd = kv.head_dim, bs = kv.block_size;
  std::vector<float> work(static_cast<size_t>(bs) * hd);
  for (int64_t i = 0; i < num; ++i) {
    const int64_t block = blocks[i], stage = kv.stage_of_block[block];
    if (stage < 0) throw std::logic_error("kv_seal: block " + std::to_string(block) + " has no staged rows");
    for (int64_t h = 0; h < kv.n_kv_heads; ++h) {
      const int64_t srow = (stage * kv.n_kv_heads + h) * bs, row = (block * kv.n_kv_heads + h) * bs;
      kv_seal_block(kv.k_stage + srow * hd, kv.k_stage_scales + srow, kv.k_stage_zeros + srow, bs, hd,
                    static_cast<uint8_t*>(kv.k) + row * (hd / 2), kv.k_scales + (block * kv.n_kv_heads + h) * hd,
                    kv.k_zeros + (block * kv.n_kv_heads + h) * hd, work.data());
    }
  }
}

}  // namespace lmrt::cpu
