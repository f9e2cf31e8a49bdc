// The paged KV pool: memory only. Which request owns which block is the
// BlockManager's business.
#pragma once

#include <cstdint>

#include "common/buffer.h"
#include "kernels/cpu/ops.h"

namespace lmrt {

class KVCache {
 public:
  KVCache(int num_layers, int num_blocks, int block_size, int num_kv_heads, int head_dim, cpu::DType dtype);

  cpu::KVLayer layer(int i);
  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  size_t bytes() const { return k_.bytes() + v_.bytes(); }
  static size_t bytes_per_block(int num_layers, int block_size, int num_kv_heads, int head_dim, cpu::DType dtype);

 private:
  int num_layers_, num_blocks_, block_size_, num_kv_heads_, head_dim_;
  cpu::DType dtype_;
  Buffer k_;  // [num_layers, num_blocks, n_kv, block_size, head_dim]
  Buffer v_;  // [num_layers, num_blocks, n_kv, block_size, head_dim]
};

}  // namespace lmrt
