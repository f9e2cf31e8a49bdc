// One step's ragged batch: the rows of every scheduled sequence, back to back.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace lmrt {

// One sequence's rows in the batch.
struct SeqRows {
  int64_t first_row = 0;  // index of its first row in Batch::tokens
  int64_t num_rows = 0;
  const int32_t* block_table = nullptr;  // [ceil(positions of its last row + 1 / block_size)]
};

struct Batch {
  std::vector<int32_t> tokens;         // [T]
  std::vector<int32_t> positions;      // [T]
  std::vector<int64_t> slots;          // [T] KV cache slot: block_id * block_size + offset
  std::vector<SeqRows> seqs;           // [num_seqs], rows of a sequence are contiguous
  std::vector<int32_t> logit_rows;     // [R] rows whose logits are computed, ascending
  std::vector<int32_t> sealed_blocks;  // int4 K: blocks whose last row this step writes (kv_seal after kv_store)
  // Every logit row wants only its next token (no prompt outputs), drawn where the logits are by sampling[r] (set
  // only for a model with samples_on_device(): then forward returns nullptr and Model::sampled_tokens() holds the
  // tokens, so only R token ids cross to the host instead of R x V logits).
  bool sample_on_device = false;
  std::vector<RowSampling> sampling;  // [R] with sample_on_device: each logit row's parameters and draw
  std::vector<int32_t> sampling_ids;  // the rows' token lists (RowSampling's ranges)

  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  void clear() {
    tokens.clear();
    positions.clear();
    slots.clear();
    seqs.clear();
    logit_rows.clear();
    sealed_blocks.clear();
    sample_on_device = false;
    sampling.clear();
    sampling_ids.clear();
  }
};

}  // namespace lmrt
