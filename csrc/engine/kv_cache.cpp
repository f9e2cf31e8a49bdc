#include "engine/kv_cache.h"

#include <stdexcept>

namespace lmrt {
namespace {

bool quantized(cpu::KVDType dt) { return dt == cpu::KVDType::I8 || dt == cpu::KVDType::I4; }
// Bytes of one row's quantization parameters: an fp16 scale and a zero point.
size_t param_bytes(cpu::KVDType dt) { return quantized(dt) ? 3 : 0; }

}  // namespace

size_t KVCache::bytes_per_block(int num_layers, int block_size, int num_kv_heads, int head_dim, cpu::KVDType k_dtype,
                                cpu::KVDType v_dtype) {
  const size_t row = cpu::kv_row_bytes(k_dtype, head_dim) + param_bytes(k_dtype) +
                     cpu::kv_row_bytes(v_dtype, head_dim) + param_bytes(v_dtype);
  return static_cast<size_t>(num_layers) * block_size * num_kv_heads * row;
}

KVCache::KVCache(int num_layers, int num_blocks, int block_size, int num_kv_heads, int head_dim, cpu::KVDType k_dtype,
                 cpu::KVDType v_dtype)
    : num_layers_(num_layers),
      num_blocks_(num_blocks),
      block_size_(block_size),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim),
      k_dtype_(k_dtype),
      v_dtype_(v_dtype),
      rows_per_layer_(static_cast<int64_t>(num_blocks) * num_kv_heads * block_size) {
  if (num_blocks <= 0 || block_size <= 0)
    throw std::invalid_argument("KV cache: num_blocks and block_size must be positive");
  for (cpu::KVDType dt : {k_dtype, v_dtype})
    if (dt == cpu::KVDType::I4 && head_dim % 32)
      throw std::invalid_argument("KV cache: int4 rows need head_dim a multiple of 32, got " +
                                  std::to_string(head_dim));
  const size_t rows = static_cast<size_t>(num_layers) * rows_per_layer_;
  k_.reset(rows * cpu::kv_row_bytes(k_dtype, head_dim));
  v_.reset(rows * cpu::kv_row_bytes(v_dtype, head_dim));
  params_.reset(rows * (param_bytes(k_dtype) + param_bytes(v_dtype)));
}

cpu::KVLayer KVCache::layer(int i) {
  const int64_t first = i * rows_per_layer_, all = static_cast<int64_t>(num_layers_) * rows_per_layer_;
  char* params = params_.data<char>();
  // params_: all K scales, then all V scales (u16 each), then all K zeros, then all V zeros (u8 each), by row.
  uint16_t* k_scales = quantized(k_dtype_) ? reinterpret_cast<uint16_t*>(params) + first : nullptr;
  uint16_t* v_scales =
      quantized(v_dtype_) ? reinterpret_cast<uint16_t*>(params) + (quantized(k_dtype_) ? all : 0) + first : nullptr;
  const int64_t num_scales = (quantized(k_dtype_) ? all : 0) + (quantized(v_dtype_) ? all : 0);
  uint8_t* zeros = reinterpret_cast<uint8_t*>(params + 2 * num_scales);
  uint8_t* k_zeros = quantized(k_dtype_) ? zeros + first : nullptr;
  uint8_t* v_zeros = quantized(v_dtype_) ? zeros + (quantized(k_dtype_) ? all : 0) + first : nullptr;
  return cpu::KVLayer{k_.data<char>() + first * cpu::kv_row_bytes(k_dtype_, head_dim_),
                      v_.data<char>() + first * cpu::kv_row_bytes(v_dtype_, head_dim_),
                      k_scales,
                      k_zeros,
                      v_scales,
                      v_zeros,
                      k_dtype_,
                      v_dtype_,
                      num_kv_heads_,
                      head_dim_,
                      block_size_};
}

}  // namespace lmrt
