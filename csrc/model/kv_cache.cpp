#include "model/kv_cache.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace lmrt {
namespace {

bool quantized(KVDType dt) { return dt == KVDType::I8 || dt == KVDType::I4 || dt == KVDType::I4Channel; }

template <typename T>
T* at(Buffer& b, int64_t offset) {
  return b.bytes() ? b.data<T>() + offset : nullptr;
}

}  // namespace

size_t KVCache::bytes_per_block(int num_layers, int block_size, int num_kv_heads, int head_dim, KVDType k_dtype,
                                KVDType v_dtype) {
  const size_t rows = static_cast<size_t>(block_size);
  size_t head = rows * (kv_row_bytes(k_dtype, head_dim) + kv_row_bytes(v_dtype, head_dim));
  head += k_dtype == KVDType::I4Channel ? 3 * static_cast<size_t>(head_dim) : quantized(k_dtype) ? 3 * rows : 0;
  head += quantized(v_dtype) ? 3 * rows : 0;
  return static_cast<size_t>(num_layers) * num_kv_heads * head;
}

int KVCache::stage_slots(int max_batch_size, int max_num_batched_tokens, int block_size) {
  return 2 * max_batch_size + (max_num_batched_tokens + block_size - 1) / block_size + 1;
}

size_t KVCache::bytes_per_stage_slot(int num_layers, int block_size, int num_kv_heads, int head_dim) {
  return static_cast<size_t>(num_layers) * num_kv_heads * block_size * (head_dim + 3);
}

KVCache::KVCache(int num_layers, int num_blocks, int block_size, int num_kv_heads, int head_dim, KVDType k_dtype,
                 KVDType v_dtype, int num_stage_slots)
    : num_layers_(num_layers),
      num_blocks_(num_blocks),
      block_size_(block_size),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim),
      num_stage_slots_(k_dtype == KVDType::I4Channel ? num_stage_slots : 0),
      k_dtype_(k_dtype),
      v_dtype_(v_dtype),
      rows_per_layer_(static_cast<int64_t>(num_blocks) * num_kv_heads * block_size),
      k_params_per_layer_(k_dtype == KVDType::I4Channel ? static_cast<int64_t>(num_blocks) * num_kv_heads * head_dim
                                                        : (quantized(k_dtype) ? rows_per_layer_ : 0)),
      stage_rows_per_layer_(static_cast<int64_t>(num_stage_slots_) * num_kv_heads * block_size) {
  if (num_blocks <= 0 || block_size <= 0)
    throw std::invalid_argument("KV cache: num_blocks and block_size must be positive");
  if (v_dtype == KVDType::I4Channel) throw std::invalid_argument("KV cache: I4Channel is for K only");
  for (KVDType dt : {k_dtype, v_dtype})
    if ((dt == KVDType::I4 || dt == KVDType::I4Channel) && head_dim % 32)
      throw std::invalid_argument("KV cache: int4 rows need head_dim a multiple of 32, got " +
                                  std::to_string(head_dim));
  if (staged() && num_stage_slots <= 0) throw std::invalid_argument("KV cache: int4 K (I4Channel) needs staging slots");
  const size_t L = static_cast<size_t>(num_layers), rows = L * rows_per_layer_;
  k_.reset(rows * kv_row_bytes(k_dtype, head_dim));
  v_.reset(rows * kv_row_bytes(v_dtype, head_dim));
  k_scales_.reset(L * k_params_per_layer_ * sizeof(uint16_t));
  k_zeros_.reset(L * k_params_per_layer_);
  const size_t v_params = quantized(v_dtype) ? rows : 0;
  v_scales_.reset(v_params * sizeof(uint16_t));
  v_zeros_.reset(v_params);
  stage_.reset(L * stage_rows_per_layer_ * head_dim);
  stage_scales_.reset(L * stage_rows_per_layer_ * sizeof(uint16_t));
  stage_zeros_.reset(L * stage_rows_per_layer_);
  stages_ = StageTable(num_blocks, num_stage_slots_);
}

size_t KVCache::bytes() const {
  return k_.bytes() + v_.bytes() + k_scales_.bytes() + k_zeros_.bytes() + v_scales_.bytes() + v_zeros_.bytes() +
         stage_.bytes() + stage_scales_.bytes() + stage_zeros_.bytes();
}

StageTable::StageTable(int num_blocks, int num_slots)
    : num_slots_(num_slots), stage_of_block_(num_blocks, -1), block_of_stage_(num_slots, -1) {
  for (int s = num_slots - 1; s >= 0; --s) free_slots_.push_back(s);
}

void StageTable::stage(int32_t block) {
  if (!num_slots_ || stage_of_block_.at(block) >= 0) return;
  if (free_slots_.empty())
    throw std::logic_error("KV cache: no free staging slot for block " + std::to_string(block) + " (" +
                           std::to_string(num_slots_) + " slots)");
  const int32_t s = free_slots_.back();
  free_slots_.pop_back();
  stage_of_block_[block] = s;
  block_of_stage_[s] = block;
}

void StageTable::keep_stages(const std::vector<int32_t>& keep) {
  for (int s = 0; s < num_slots_; ++s) {
    const int32_t b = block_of_stage_[s];
    if (b < 0 || std::find(keep.begin(), keep.end(), b) != keep.end()) continue;
    stage_of_block_[b] = -1;
    block_of_stage_[s] = -1;
    free_slots_.push_back(s);
  }
}

KVLayer KVCache::layer(int i) {
  const int64_t rows = i * rows_per_layer_, kp = i * k_params_per_layer_, st = i * stage_rows_per_layer_;
  KVLayer l;
  l.k = k_.data<char>() + rows * kv_row_bytes(k_dtype_, head_dim_);
  l.v = v_.data<char>() + rows * kv_row_bytes(v_dtype_, head_dim_);
  l.k_scales = at<uint16_t>(k_scales_, kp);
  l.k_zeros = at<uint8_t>(k_zeros_, kp);
  l.v_scales = at<uint16_t>(v_scales_, rows);
  l.v_zeros = at<uint8_t>(v_zeros_, rows);
  l.k_dtype = k_dtype_;
  l.v_dtype = v_dtype_;
  l.n_kv_heads = num_kv_heads_;
  l.head_dim = head_dim_;
  l.block_size = block_size_;
  if (staged()) {
    l.k_stage = at<uint8_t>(stage_, st * head_dim_);
    l.k_stage_scales = at<uint16_t>(stage_scales_, st);
    l.k_stage_zeros = at<uint8_t>(stage_zeros_, st);
    l.stage_of_block = stages_.stage_of_block();
  }
  return l;
}

}  // namespace lmrt
