#include "engine/kv_cache.h"

#include <stdexcept>

namespace lmrt {

static size_t elem_size(cpu::DType dt) { return dt == cpu::DType::F32 ? 4 : 2; }

size_t KVCache::bytes_per_block(int num_layers, int block_size, int num_kv_heads, int head_dim, cpu::DType dtype) {
  return 2ull * num_layers * block_size * num_kv_heads * head_dim * elem_size(dtype);
}

KVCache::KVCache(int num_layers, int num_blocks, int block_size, int num_kv_heads, int head_dim, cpu::DType dtype)
    : num_layers_(num_layers),
      num_blocks_(num_blocks),
      block_size_(block_size),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim),
      dtype_(dtype) {
  if (num_blocks <= 0 || block_size <= 0)
    throw std::invalid_argument("KV cache: num_blocks and block_size must be positive");
  const size_t half = bytes_per_block(num_layers, block_size, num_kv_heads, head_dim, dtype) / 2 * num_blocks;
  k_.reset(half);
  v_.reset(half);
}

cpu::KVLayer KVCache::layer(int i) {
  const size_t per_layer =
      static_cast<size_t>(num_blocks_) * num_kv_heads_ * block_size_ * head_dim_ * elem_size(dtype_);
  return cpu::KVLayer{
      k_.data<char>() + i * per_layer, v_.data<char>() + i * per_layer, dtype_, num_kv_heads_, head_dim_, block_size_};
}

}  // namespace lmrt
