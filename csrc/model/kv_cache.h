// The paged KV pool: memory only. Which request owns which block is the BlockManager's business; which
// blocks have a staging slot (int4 K, KVDType::I4Channel) is the engine's, step by step.
#pragma once

#include <cstdint>
#include <vector>

#include "common/buffer.h"
#include "kernels/ops.h"

namespace lmrt {

// Which blocks have a staging slot (int4 K, KVDType::I4Channel): the bookkeeping the engine drives step by step,
// whoever holds the slots' memory (KVCache on the host, the op-set model on its device).
class StageTable {
 public:
  StageTable() = default;
  StageTable(int num_blocks, int num_slots);
  // Gives `block` a slot unless it has one (a slot left by a freed block is taken over with its block: its rows are
  // rewritten before they are read); std::logic_error when none is free.
  void stage(int32_t block);
  // Frees the slots of every block not in `keep` (sealed blocks, blocks no request holds any more).
  void keep_stages(const std::vector<int32_t>& keep);
  int num_staged() const { return num_slots_ - static_cast<int>(free_slots_.size()); }
  int num_slots() const { return num_slots_; }
  const int32_t* stage_of_block() const { return stage_of_block_.data(); }  // [num_blocks] slot, or -1

 private:
  int num_slots_ = 0;
  std::vector<int32_t> stage_of_block_;  // [num_blocks] slot, or -1
  std::vector<int32_t> block_of_stage_;  // [num_slots] block, or -1
  std::vector<int32_t> free_slots_;
};

class KVCache {
 public:
  // num_stage_slots: staging slots for I4Channel K (0 for other dtypes); stage_slots() says how many.
  KVCache(int num_layers, int num_blocks, int block_size, int num_kv_heads, int head_dim, KVDType k_dtype,
          KVDType v_dtype, int num_stage_slots = 0);

  KVLayer layer(int i);
  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  bool staged() const { return k_dtype_ == KVDType::I4Channel; }
  size_t bytes() const;
  // One block of every layer, K and V with their quantization parameters (3 bytes a row for I8 / I4, 3 bytes a
  // channel for I4Channel).
  static size_t bytes_per_block(int num_layers, int block_size, int num_kv_heads, int head_dim, KVDType k_dtype,
                                KVDType v_dtype);
  // Staging slots an engine needs for I4Channel K: the partial last blocks of the requests running before a
  // step (preempted ones included) and of the requests it admits, and the blocks the step's rows fill, with
  // one to spare; and the bytes of one slot (every layer's I8 rows and their scales and zeros).
  static int stage_slots(int max_batch_size, int max_num_batched_tokens, int block_size);
  static size_t bytes_per_stage_slot(int num_layers, int block_size, int num_kv_heads, int head_dim);

  // The staging slots' bookkeeping (I4Channel K).
  StageTable& stages() { return stages_; }

 private:
  int num_layers_, num_blocks_, block_size_, num_kv_heads_, head_dim_, num_stage_slots_;
  KVDType k_dtype_, v_dtype_;
  int64_t rows_per_layer_;             // num_blocks * num_kv_heads * block_size
  int64_t k_params_per_layer_;         // I8 / I4 K: rows_per_layer; I4Channel: num_blocks * num_kv_heads * head_dim
  int64_t stage_rows_per_layer_;       // num_stage_slots * num_kv_heads * block_size
  Buffer k_;                           // [num_layers, rows_per_layer, kv_row_bytes(k_dtype)]
  Buffer v_;                           // [num_layers, rows_per_layer, kv_row_bytes(v_dtype)]
  Buffer k_scales_, k_zeros_;          // [num_layers, k_params_per_layer] u16, u8 (I8 / I4 / I4Channel K)
  Buffer v_scales_, v_zeros_;          // [num_layers, rows_per_layer] u16, u8 (I8 / I4 V)
  Buffer stage_;                       // [num_layers, stage_rows_per_layer, head_dim] I8 codes (I4Channel K)
  Buffer stage_scales_, stage_zeros_;  // [num_layers, stage_rows_per_layer] u16, u8
  StageTable stages_;
};

}  // namespace lmrt
