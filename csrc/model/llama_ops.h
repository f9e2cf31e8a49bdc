// The Llama-family forward pass over a backend's op set (backend/device_ops.h), exact fp32, or with bf16 prefill the
// products of steps of kBf16MinRows+ rows (prompt chunks, large batches) on the op set's bf16 unit (the GPU's tensor
// cores; the CPU's tile unit), as LlamaModel takes its tiles (so a request's results then depend on the rows beside
// it; exact fp32 keeps them independent): the CUDA backend's model. Its weights, KV pool and workspaces live in the op
// set's memory; a step uploads the batch's ids, positions, slots and block tables, runs the layers, and downloads the
// logits rows. On the CPU op set it gives LlamaModel's bits with fp32 prefill and products (tests/test_ops_model.py),
// which checks everything here but the kernels. Not yet: int8 activations, int8 or interleaved matrices.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "backend/device_ops.h"
#include "model/model.h"

namespace lmrt {

class OpsLlamaModel final : public Model {
 public:
  // With bf16 prefill, steps (and logit rows) of at least this many rows run their products in bf16: LlamaModel's
  // threshold (kTilesMinRows).
  static constexpr int64_t kBf16MinRows = 16;
  // std::invalid_argument for what the op set cannot run (an int8 output matrix on the GPU).
  OpsLlamaModel(ModelSpec spec, Weights weights, Backend& backend, const KVCacheShape& kv);

  const float* forward(const Batch& batch) override;
  const ModelSpec& spec() const override { return spec_; }
  size_t weights_bytes() const override { return weights_.bytes(); }
  size_t kv_bytes() const override { return kv_bytes_; }
  StageTable* staged_cache() override { return stage_of_block_ ? &stages_ : nullptr; }
  bool samples_on_device() const override { return true; }
  const int32_t* sampled_tokens() const override { return host_tokens_.data(); }

 private:
  struct Layer {
    DeviceMatrix qkv, o, gate_up, down;
    const float* input_norm = nullptr;      // [H]
    const float* qkv_bias = nullptr;        // [qkv_dim] or nullptr
    const float* post_attn_norm = nullptr;  // [H]
    KVLayer kv;                             // this layer's part of the KV pool
  };
  // A host array's copy in the op set's memory, kept for the model's lifetime.
  template <typename T>
  const T* upload(const std::vector<T>& host);
  void* kv_array(size_t bytes);  // a KV pool array, zeroed, kept for the model's lifetime
  void reserve(int64_t T, int64_t R, int64_t table_len);
  // The step's ops, embedding to logits, over the uploaded batch (a decode step's: what a step graph records).
  void run(const Batch& batch, int64_t T, int64_t R);
  std::vector<const void*> workspace_layout() const;
  // One decoder layer; residual: the previous layer's last output (in h_), added into x_ by this layer's first norm.
  void layer(const Layer& w, int64_t T, const float* residual, bool bf16);

  ModelSpec spec_;
  Weights weights_;  // host: the CPU op set's matrices are views of it
  DeviceOps& ops_;
  std::vector<DeviceBuffer> owned_;  // weights' norms and biases, inv_freq, the KV pool
  std::vector<Layer> layers_;
  DeviceMatrix head_;                // the output matrix
  const void* embed_ = nullptr;      // [V, H] of weights_.embed.dtype
  const float* norm_ = nullptr;      // [H]
  const float* inv_freq_ = nullptr;  // [head_dim / 2]
  bool bf16_ = false;                // bf16 prefill: steps of kBf16MinRows+ rows on the op set's bf16 unit
  bool graphs_ = false;              // decode steps as graphs the op set records (BackendOptions::step_graphs)
  std::map<int64_t, std::vector<const void*>> graph_layouts_;  // rows -> the workspaces its graph was recorded over
  bool rotate_qk_ = false;  // K cached as I8: q and k rotated (hadamard_heads), as LlamaModel does
  size_t kv_bytes_ = 0;
  int64_t num_blocks_ = 0;
  StageTable stages_;                  // int4 K (I4Channel): the blocks' staging slots, the engine's bookkeeping
  int32_t* stage_of_block_ = nullptr;  // [num_blocks] its copy on the device (every layer's KVLayer points here)
  DeviceBuffer sealed_;                // [num_sealed_] int32: the step's sealed blocks (Batch::sealed_blocks)
  int64_t num_sealed_ = 0;
  // The step's batch on the device:
  DeviceBuffer tokens_, positions_, slots_;  // [T] int32, int32, int64
  DeviceBuffer tables_;                      // every sequence's block table, end to end, int32
  DeviceBuffer table_start_;                 // [T] int64: row t's table at tables_ + table_start[t]
  std::vector<int32_t> host_tables_;         // their host copies
  std::vector<int64_t> host_table_start_;
  // Workspaces, grown to the largest step:
  DeviceBuffer x_;                    // [T, H] residual stream
  DeviceBuffer h_;                    // [T, H] normed input / sublayer output
  DeviceBuffer qkv_;                  // [T, qkv_dim]
  DeviceBuffer attn_;                 // [T, nh hd]
  DeviceBuffer gu_;                   // [T, 2 I]
  DeviceBuffer act_;                  // [T, I]
  DeviceBuffer attn_scratch_;         // the op set's attention scratch (split-KV partials) for T rows
  DeviceBuffer sel_;                  // [R, H] final hidden rows that need logits, normed
  DeviceBuffer logits_;               // [R, V]
  DeviceBuffer tokens_out_;           // [R] int32: sampled tokens (batch.sample_on_device)
  DeviceBuffer sampling_;             // [R] RowSampling (batch.sample_on_device)
  DeviceBuffer sampling_ids_;         // the rows' token lists, int32
  std::vector<float> host_logits_;    // [R, V]
  std::vector<int32_t> host_tokens_;  // [R]
};

}  // namespace lmrt
