// The paged KV pool: memory only. Which request owns which block is the
// BlockManager's business.
#pragma once

#include <cstdint>

#include "common/buffer.h"
#include "kernels/cpu/ops.h"

namespace lmrt {

class KVCache {
 public:
  KVCache(int num_layers, int num_blocks, int block_size, int num_kv_heads, int head_dim, cpu::KVDType k_dtype,
          cpu::KVDType v_dtype);

  cpu::KVLayer layer(int i);
  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  size_t bytes() const { return k_.bytes() + v_.bytes() + params_.bytes(); }
  // One block of every layer, K and V with their quantization parameters (3 bytes a row for I8 / I4).
  static size_t bytes_per_block(int num_layers, int block_size, int num_kv_heads, int head_dim, cpu::KVDType k_dtype,
                                cpu::KVDType v_dtype);

 private:
  int num_layers_, num_blocks_, block_size_, num_kv_heads_, head_dim_;
  cpu::KVDType k_dtype_, v_dtype_;
  int64_t rows_per_layer_;  // num_blocks * num_kv_heads * block_size
  Buffer k_;                // [num_layers, rows_per_layer, kv_row_bytes(k_dtype)]
  Buffer v_;                // [num_layers, rows_per_layer, kv_row_bytes(v_dtype)]
  Buffer params_;           // [num_layers, rows_per_layer]: k scales (u16), v scales (u16), k zeros (u8), v zeros (u8)
};

}  // namespace lmrt
