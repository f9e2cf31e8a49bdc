// The engine: owns the model, the KV pool, the scheduler and the loop thread.
// Thread-safe: submit / get / abort / stats may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "engine/block_manager.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "model/batch.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace lmrt {

// Every value concrete and chosen by the caller (lmrt/resolve.py): the engine has no defaults of its
// own and refuses values out of range (Engine::Engine).
struct EngineOptions {
  int num_blocks = 0;              // KV blocks in the pool
  int block_size = 0;              // tokens per KV block
  KVDType k_dtype = KVDType::F32;  // the pairs KVCache takes: alike, I8 + I4, I4Channel + I4
  KVDType v_dtype = KVDType::F32;
  int max_batch_size = 0;          // running requests at most
  int max_num_batched_tokens = 0;  // rows per forward step at most
  int num_threads = 0;             // kernel threads, the engine's loop thread included
  int session_len = 0;             // prompt + generated tokens per request at most
  bool enable_prefix_caching = false;
  Device device = Device::Cpu;  // make_backend refuses one this build or machine lacks
  // The CPU backend's precisions (backend.h, LlamaModel): bf16 tiles for steps of 16+ rows (prompt chunks, decode
  // of 16+ requests; smaller decode steps stay exact), and int8 activations into the 4-bit products off the tiles.
  PrefillPrecision prefill_precision = PrefillPrecision::FP32;
  TileUnit tile_unit = TileUnit::Model;  // runs bf16 prefill (checked available)
  LinearPrecision linear_precision = LinearPrecision::FP32;
  // The model over the backend's op set (OpsLlamaModel: the one device 'cuda' runs) on the CPU too: the check of
  // that model against LlamaModel (exact fp32 only).
  bool ops_model = false;
  // Decode steps replayed as graphs recorded per row count (the op-set model: CUDA graphs on device 'cuda', the op
  // calls themselves on the CPU op set; EngineConfig.enforce_eager off).
  bool step_graphs = false;
};

// What get() hands back: tokens sampled since the previous call, and the end.
struct StreamChunk {
  std::vector<int32_t> token_ids;
  FinishReason finish_reason = FinishReason::None;  // None while running
  std::string error;                                // set when finish_reason is Error
  int num_prompt_tokens = 0;
  int num_prefilled_tokens = 0;  // prompt tokens whose K/V are in the cache at the time of get() (progress)
  int num_cached_tokens = 0;
  int num_preemptions = 0;
  std::vector<float> prompt_logprobs;  // [num_prompt_tokens - 1], final chunk only
  std::vector<float> prompt_logits;    // [num_prompt_tokens, V], final chunk only
};

// Where the loop thread's steps spent their time, summed over steps (waits for work not included).
struct StepTime {
  int64_t schedule_ns = 0;     // aborts, scheduling, building the batch (lock held for the first two)
  int64_t forward_ns = 0;      // the model's forward pass: the kernels and what runs between them
  int64_t postprocess_ns = 0;  // sampling, stop checks, publishing the tokens, prefix-cache registration
};

struct EngineStats {
  int num_running, num_waiting, num_free_blocks, num_blocks, block_size;
  int64_t num_steps, num_preemptions, prefix_cache_hit_tokens, prefix_cache_query_tokens, num_prefill_tokens,
      num_decode_tokens;
  size_t kv_cache_bytes, weights_bytes;
  int num_staged_blocks;  // int4 K: blocks whose rows are staged (being filled) now
  StepTime step_time;
  int64_t pool_late_workers, pool_narrow_jobs;  // the backend's threads: contention seen, and its cost
  int64_t num_device_sampled_steps;             // steps whose tokens were drawn where the logits are
  int64_t num_row_group_steps;  // steps whose rows ran in groups, a thread each (Model::last_row_groups)
};

class UnknownRequestError : public std::out_of_range {
 public:
  using std::out_of_range::out_of_range;
};

class Engine {
 public:
  Engine(ModelSpec spec, Weights weights, EngineOptions options);
  ~Engine();
  // Throws std::invalid_argument naming the first option out of range; returns o.
  static const EngineOptions& check(const EngineOptions& o);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request; throws std::invalid_argument naming what is wrong with it.
  int64_t submit(std::vector<int32_t> prompt, RequestParams params);
  // Waits up to timeout_s for news of request id (timeout_s < 0 waits forever).
  // After the chunk with a finish reason the id is forgotten.
  StreamChunk get(int64_t id, double timeout_s);
  // Ends a running or waiting request; it finishes with reason Abort.
  void abort(int64_t id);
  // The caller will read no more of this request: abort it if it still runs and forget its
  // output. Unknown ids are ignored (so it is safe from destructors).
  void detach(int64_t id);
  // Holds the loop between steps (a step in flight finishes first) until resume(); submit, abort and get still
  // work meanwhile, and run when it resumes. resume(n) with n >= 0 runs n more steps that do work, counted from
  // the steps that start after the call (not one already in flight), then holds again. For callers that need a request
  // in a known state when they act on it (tests: a request still waiting, or running after exactly one step, when
  // abort() reaches it).
  void pause();
  void resume(int64_t steps = -1);
  EngineStats stats();
  // Streams whose final chunk has not been taken yet (leak checks in tests).
  int num_streams();
  void shutdown();

  const ModelSpec& spec() const { return model_->spec(); }
  // How the 4-bit products with int8 activations read their weights: "interleaved" (every product of every step,
  // LlamaModel), "rows", or "" where linear_precision is not Int8.
  std::string int8_weight_layout() const {
    if (options_.linear_precision != LinearPrecision::Int8) return "";
    return model_->int8_interleaved() ? "interleaved" : "rows";
  }
  int capacity_tokens() const { return options_.num_blocks * options_.block_size; }

 private:
  struct Stream {
    StreamChunk pending;
    bool done = false;
    bool detached = false;  // nobody will call get(): drop it when done
  };

  void loop();
  bool step();
  void build_batch(const std::vector<ScheduledSeq>& plan);
  void postprocess(const std::vector<ScheduledSeq>& plan, const float* logits);
  void release_stages();
  void finish(Request* r, FinishReason reason, const std::string& error = "");
  void handle_aborts();

  EngineOptions options_;
  std::unique_ptr<Backend> backend_;  // the model's ops and the sampling's threads
  std::unique_ptr<Model> model_;      // owns the KV cache (make_model: LlamaModel, or OpsLlamaModel)
  BlockManager blocks_;
  Scheduler scheduler_;
  // A request whose next token is drawn this step (postprocess): its logits row, the tokens it may not draw yet.
  struct SampleJob {
    Request* req;
    float* logits;              // [V]; nullptr: token already drawn on the device (Batch::sample_on_device)
    std::vector<int32_t> bans;  // stop and EOS ids while min_new_tokens is not reached
    int32_t token;
    bool finite = true;  // false: a logit was NaN or +inf (no token; the request ends in an error)
  };
  std::vector<SampleJob> jobs_;  // [requests sampling this step]
  Batch batch_;
  std::vector<int32_t> logit_base_;  // [num scheduled seqs] first logits row of each, or -1
  Sampler sampler_;                  // build_batch's distinct context tokens (sampling on the device)
  std::vector<int32_t> distinct_;    // [<= context] one request's distinct tokens

  std::mutex mu_;                                                   // guards everything below
  std::condition_variable work_cv_;                                 // the loop waits for work
  std::condition_variable out_cv_;                                  // get() waits for output
  std::unordered_map<int64_t, std::unique_ptr<Request>> requests_;  // live requests
  std::unordered_map<int64_t, Stream> streams_;                     // until the final chunk is taken
  int64_t next_id_ = 1;
  bool has_aborts_ = false;
  bool stop_ = false;
  int64_t steps_left_ = -1;  // steps the loop may still take (pause / resume); -1: no limit
  int64_t num_steps_ = 0, num_prefill_tokens_ = 0, num_decode_tokens_ = 0;
  int64_t num_device_sampled_steps_ = 0;  // steps sampled where the logits are (Batch::sample_on_device)
  int64_t num_row_group_steps_ = 0;       // steps run in row groups (Model::last_row_groups() > 1)
  int num_staged_ = 0;  // the staged cache's num_staged() after the last step (stats() reads it under mu_)
  StepTime time_;       // summed over steps (under mu_)
  std::thread thread_;
};

}  // namespace lmrt
