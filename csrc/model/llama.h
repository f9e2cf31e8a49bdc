// Llama-family forward pass over a ragged batch (Llama, Mistral, Qwen2).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "backend/backend.h"
#include "common/buffer.h"
#include "kernels/ops.h"
#include "model/batch.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/model_spec.h"
#include "model/weights.h"

namespace lmrt {

class CpuBackend;
namespace cpu {
class ThreadPool;
}

// Runs on the backend it is given (the CPU backend in this build: std::invalid_argument for another), which it
// uses for every op; owns its weights and its KV cache. The backend's options choose its precisions:
//  - prefill_precision BF16: batches of >= kTilesMinRows (16) rows run layer_tiles (products, and the attention of
//    sequences with 32+ query rows, on the tile unit: AMX, AVX512-BF16, or the software model), and so does the
//    output matrix when 16+ rows need logits (get_logits, perplexity, decode steps of 16+ requests);
//  - linear_precision Int8: the 4-bit products quantize their input per run of 32 inputs to int8 and run int8 dot
//    products. Where the AVX-512 path is active, the layers' 4-bit matrices are interleaved at load (interleave_w4)
//    and every product of every step runs cpu::linear_w4a8_il (AMX-INT8 or VNNI, the same bits), prompt chunks
//    included (their attention still follows prefill_precision), except where the tile unit is AMX: there a step of
//    kInt8TilesMinRows (64) rows or more runs layer_tiles, its products on bf16 tiles packed from the interleaved
//    layout (AMX-INT8 hands every 32 inputs' dots to the vector units; the bf16 tiles keep a whole row's sum).
//    Elsewhere the products off the tiles run cpu::linear_w4a8 over the row layout. Where VNNI is present too, an int8
//    output matrix is interleaved as well (interleave_i8) and takes integer activations (cpu::linear_i8a8_il) at every
//    row count, instead of fp32 ones (or the tiles for 16+ rows): int8 per run of 32 inputs, or, where the CPU has
//    AMX-INT8, int16 per row (I8Activations::Int16Rows: faster on its tiles, and nearer the exact product).
// Where K is cached as int8 (per token and head: KVDType::I8), q and k are rotated by cpu::hadamard_heads after RoPE
// and before K is stored: q.k is unchanged, and a per-token scale over the rotated K loses less than over the raw
// one, whose few outlier channels set it (the mean KL against fp32 KV drops about 2.3x, benchmarks/RESULTS.md).
class LlamaModel final : public Model {
 public:
  LlamaModel(ModelSpec spec, Weights weights, Backend& backend, const KVCacheShape& kv);

  // Writes K/V of every batch row into the cache and returns logits [R, V] for batch.logit_rows (valid until the
  // next call). note: the cache must already own the blocks that batch.slots point to.
  const float* forward(const Batch& batch) override;

  const ModelSpec& spec() const override { return spec_; }
  const Weights& weights() const { return weights_; }
  size_t weights_bytes() const override { return weights_.bytes(); }
  size_t kv_bytes() const override { return kv_.bytes(); }
  StageTable* staged_cache() override { return kv_.staged() ? &kv_.stages() : nullptr; }
  // linear_precision Int8 with the layers' 4-bit matrices interleaved (cpu::linear_w4a8_il for every product).
  bool int8_interleaved() const override { return int8_interleaved_; }
  int64_t last_row_groups() const override { return last_row_groups_; }
  KVCache& kv() { return kv_; }
  const KVCache& kv() const { return kv_; }

 private:
  void reserve(int64_t num_rows, int64_t num_logit_rows);
  Buffer* a8() { return int8_activations_ ? &int8_x_ : nullptr; }  // apply_linear's int8 scratch, or exact
  // Rows [b, e) of a step, and the sequences [s0, s1) that hold exactly those rows.
  struct RowSpan {
    int64_t b, e, s0, s1;
  };
  // One decoder layer on x_ (layer: span's rows, its products' int8 scratch a8, a8() or a row group's), exact fp32
  // (every kernel batch invariant; attention of long prompt chunks on the tiles where attn_tiles) or on bf16 tiles
  // (a long chunk's row-local ops a thread each, without barriers between them: cpu::bf16_tiles_row_groups).
  void layer(int l, const Batch& batch, const KVLayer& cache, cpu::ThreadPool& pool, bool attn_tiles,
             const RowSpan& span, Buffer* a8);
  void layer_tiles(int l, const Batch& batch, const KVLayer& cache, cpu::ThreadPool& pool);
  // How many row groups a step runs in, each group's rows through every layer on one thread: the pool's threads
  // in int8 mode where the layers are 4-bit, every row is a sequence of its own (a decode step), nothing is sealed,
  // and the rows are enough (kRowGroupMinRows); else 1 (layer by layer on the whole pool).
  int64_t decode_row_groups(const Batch& batch, int threads) const;
  // RoPE on qkv_'s q and k, K/V into the cache, causal attention into attn_ (span's rows and sequences).
  void attention(const Batch& batch, const KVLayer& cache, cpu::ThreadPool& pool, bool tiles, const RowSpan& span);
  void rope_store(const Batch& batch, const KVLayer& cache, int64_t b, int64_t e);  // rows [b, e): RoPE, K/V stored
  // row r's q heads of KV head h and that KV head: RoPE, K/V stored (the same bits as rope_store's)
  void rope_store_head(const Batch& batch, const KVLayer& cache, int64_t r, int h);
  // Sealing, then the attention of span's sequences (prepare: cpu::AttnPrepare, its sequence index span-relative).
  void attend(const Batch& batch, const KVLayer& cache, cpu::ThreadPool& pool, bool tiles, const RowSpan& span,
              const std::function<void(int64_t, int)>* prepare = nullptr);

  ModelSpec spec_;
  Weights weights_;
  CpuBackend& backend_;
  KVCache kv_;
  // Workspaces grow to the largest batch seen and are reused; nothing is allocated per step otherwise.
  Buffer x_;        // [T, H] residual stream
  Buffer h_;        // [T, H] normed input / sublayer output
  Buffer qkv_;      // [T, qkv_dim]
  Buffer attn_;     // [T, nh hd]
  Buffer gu_;       // [T, 2 I]
  Buffer act_;      // [T, I]
  Buffer sel_;      // [R, H] final hidden rows that need logits
  Buffer logits_;   // [R, V]
  Buffer rope_cs_;  // [T, head_dim] each token's RoPE cos, then sin (cpu::rope_factors), for every layer
  std::vector<AttnSeq> attn_seqs_;  // [num_seqs]
  bool rotate_qk_ = false;          // K is cached as I8: q and k rotated (cpu::hadamard_heads) before attention
  bool w4_layers_ = false;          // every layer's matrices 4-bit (decode_row_groups)
  int64_t last_row_groups_ = 1;     // the last forward's row groups
  // The tile path (prefill_precision BF16):
  bool bf16_prefill_ = false;
  TileUnit tile_unit_ = TileUnit::Model;
  bool gate_up_paired_ = false;  // gate_up read with pair_halves: its product ends in silu_mul
  Buffer tiles_x_;               // [bf16_tiles_x_size(T, H)] uint16: a norm's output as bf16, qkv's or gate/up's input
  Buffer tiles_act_;             // [bf16_tiles_x_size(T, I)] uint16: silu(gate) * up as bf16, down's input
  Buffer tiles_o_;     // [bf16_tiles_x_size(T, q_dim)] uint16: the attention's output as bf16 (AttnSeq::out_bf16)
  Buffer attn_tiles_;  // paged_attention_tiles' packed K/V (it sizes it)
  // int8 activations (linear_precision Int8):
  bool int8_activations_ = false;
  bool int8_interleaved_ = false;  // the layers' 4-bit matrices interleaved: products int8 (AMX: large steps on tiles)
  bool head_interleaved_ = false;  // and the int8 output matrix (VNNI): cpu::linear_i8a8_il for every row count
  Buffer int8_x_;                  // a product's input quantized (cpu::linear_w4a8 sizes it)
  std::vector<Buffer> group_x_;    // [row groups] the same, a decode row group's (decode_row_groups)
};

}  // namespace lmrt
