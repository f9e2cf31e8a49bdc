// What the engine runs: a forward pass over a ragged batch that writes its K/V into the model's cache and hands back
// logits on the host. LlamaModel (model/llama.h) is the CPU backend's, with its precision paths; OpsLlamaModel
// (model/llama_ops.h) runs on any backend's op set (backend/device_ops.h): the CUDA backend's model.
#pragma once

#include <cstddef>
#include <memory>

#include "backend/backend.h"
#include "model/batch.h"
#include "model/kv_cache.h"
#include "model/model_spec.h"
#include "model/weights.h"

namespace lmrt {

// The paged KV pool a model allocates for itself.
struct KVCacheShape {
  int num_blocks = 0;
  int block_size = 0;
  KVDType k_dtype = KVDType::F32;
  KVDType v_dtype = KVDType::F32;
  int num_stage_slots = 0;  // I4Channel K's staging slots (KVCache::stage_slots)
};

class Model {
 public:
  virtual ~Model() = default;
  // Writes K/V of every batch row into the cache and returns logits [R, V] (host memory) for batch.logit_rows,
  // valid until the next call; with batch.sample_on_device, nullptr, and sampled_tokens() holds the rows' tokens.
  // note: the cache must already own the blocks that batch.slots point to.
  virtual const float* forward(const Batch& batch) = 0;
  // Whether forward can sample where the logits are (batch.sample_on_device), and after such a step the tokens [R]
  // (host memory; -1 where a row's logits held NaN or +inf), valid until the next call.
  virtual bool samples_on_device() const { return false; }
  virtual const int32_t* sampled_tokens() const { return nullptr; }
  virtual const ModelSpec& spec() const = 0;
  virtual size_t weights_bytes() const = 0;
  virtual size_t kv_bytes() const = 0;
  // The cache whose int4 K blocks are staged (KVDType::I4Channel: the engine gives blocks their staging slots), or
  // nullptr where nothing is staged.
  virtual StageTable* staged_cache() = 0;
  // linear_precision Int8 with the 4-bit matrices interleaved (LlamaModel).
  virtual bool int8_interleaved() const { return false; }
  // How many row groups the last forward ran in (LlamaModel::decode_row_groups); 1: layer by layer.
  virtual int64_t last_row_groups() const { return 1; }
};

// The backend's model: OpsLlamaModel on a CUDA backend, or where ops_model asks for it on the CPU (the check of
// that model against LlamaModel); else LlamaModel.
std::unique_ptr<Model> make_model(ModelSpec spec, Weights weights, Backend& backend, const KVCacheShape& kv,
                                  bool ops_model);

}  // namespace lmrt
