#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>

namespace lmrt {

const EngineOptions& Engine::check(const EngineOptions& o) {
  auto need = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("EngineOptions: ") + what);
  };
  need(o.num_blocks >= 1, "num_blocks must be >= 1");
  need(o.block_size >= 1, "block_size must be >= 1");
  need(o.max_batch_size >= 1, "max_batch_size must be >= 1");
  need(o.max_num_batched_tokens >= 1, "max_num_batched_tokens must be >= 1");
  need(o.num_threads >= 1, "num_threads must be >= 1");
  need(o.session_len >= 2, "session_len must be >= 2");
  using KV = KVDType;
  need((o.k_dtype == o.v_dtype && o.k_dtype != KV::I4Channel) || (o.k_dtype == KV::I8 && o.v_dtype == KV::I4) ||
           (o.k_dtype == KV::I4Channel && o.v_dtype == KV::I4),
       "k_dtype / v_dtype must be alike (not int4_channel), int8 / int4, or int4_channel / int4");
  return o;
}

namespace {

BackendOptions backend_options(const EngineOptions& o) {
  BackendOptions b;
  b.device = o.device;
  b.num_threads = o.num_threads;
  b.prefill_precision = o.prefill_precision;
  b.tile_unit = o.tile_unit;
  b.linear_precision = o.linear_precision;
  b.step_graphs = o.step_graphs;
  return b;
}

}  // namespace

Engine::Engine(ModelSpec spec, Weights weights, EngineOptions options)
    : options_(check(options)),
      backend_(make_backend(backend_options(options_))),
      model_(make_model(std::move(spec), std::move(weights), *backend_,
                        KVCacheShape{options.num_blocks, options.block_size, options.k_dtype, options.v_dtype,
                                     KVCache::stage_slots(options.max_batch_size, options.max_num_batched_tokens,
                                                          options.block_size)},
                        options.ops_model)),
      blocks_(options.num_blocks, options.block_size, options.enable_prefix_caching),
      scheduler_(SchedulerConfig{options.max_batch_size, options.max_num_batched_tokens}, blocks_) {
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() { shutdown(); }

void Engine::shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) return;
    stop_ = true;
  }
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<int64_t> live;
  for (auto& kv : requests_) live.push_back(kv.first);
  for (int64_t id : live) finish(requests_.at(id).get(), FinishReason::Abort);
  out_cv_.notify_all();
}

int64_t Engine::submit(std::vector<int32_t> prompt, RequestParams params) {
  const ModelSpec& s = model_->spec();
  const int n = static_cast<int>(prompt.size());
  if (n == 0) throw std::invalid_argument("prompt is empty: at least one token is needed");
  for (int32_t t : prompt)
    if (t < 0 || t >= s.vocab_size)
      throw std::invalid_argument("prompt token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                                  std::to_string(s.vocab_size) + ")");
  const SamplingParams& sp = params.sampling;
  if (!(sp.temperature >= 0.f) || !std::isfinite(sp.temperature))
    throw std::invalid_argument("temperature must be a finite number >= 0");
  if (!(sp.top_p > 0.f && sp.top_p <= 1.f)) throw std::invalid_argument("top_p must be in (0, 1]");
  if (!(sp.min_p >= 0.f && sp.min_p <= 1.f)) throw std::invalid_argument("min_p must be in [0, 1]");
  if (sp.top_k < 0) throw std::invalid_argument("top_k must be >= 0 (0 disables it)");
  if (!(sp.repetition_penalty > 0.f)) throw std::invalid_argument("repetition_penalty must be > 0");
  if (params.max_new_tokens < 0 || params.min_new_tokens < 0)
    throw std::invalid_argument("max_new_tokens and min_new_tokens must be >= 0");
  const bool scoring = params.max_new_tokens == 0;
  if (scoring ? n > options_.session_len : n >= options_.session_len)
    throw std::invalid_argument(
        "prompt has " + std::to_string(n) + " tokens but session_len is " + std::to_string(options_.session_len) +
        (scoring ? "" : " (one more is needed to generate)") + ": shorten the prompt or raise session_len");
  if (blocks_.blocks_for(n + (scoring ? 0 : 1)) > options_.num_blocks)
    throw std::invalid_argument("prompt has " + std::to_string(n) + " tokens but the KV cache holds " +
                                std::to_string(capacity_tokens()) + ": give the cache more memory");
  for (int32_t t : params.stop_token_ids)
    if (t < 0 || t >= s.vocab_size)
      throw std::invalid_argument("stop token id " + std::to_string(t) + " is outside the vocabulary");

  auto r = std::make_unique<Request>();
  r->tokens = std::move(prompt);
  r->num_prompt_tokens = n;
  r->max_total_tokens = std::min({n + params.max_new_tokens, options_.session_len, capacity_tokens()});
  r->rng.seed(sp.has_seed ? sp.seed : std::random_device{}());
  if (params.prompt_logprobs) r->prompt_logprobs.assign(n > 0 ? n - 1 : 0, 0.f);
  if (params.prompt_logits) r->prompt_logits.assign(static_cast<size_t>(n) * s.vocab_size, 0.f);
  r->params = std::move(params);

  int64_t id;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) throw std::runtime_error("engine is shut down");
    id = r->id = next_id_++;
    streams_[id].pending.num_prompt_tokens = n;
    scheduler_.add(r.get());
    requests_[id] = std::move(r);
  }
  work_cv_.notify_one();
  return id;
}

StreamChunk Engine::get(int64_t id, double timeout_s) {
  std::unique_lock<std::mutex> lk(mu_);
  if (streams_.find(id) == streams_.end()) throw UnknownRequestError("unknown request id " + std::to_string(id));
  auto ready = [&] {
    const auto it = streams_.find(id);  // gone: detached (by another thread) and finished meanwhile
    return it == streams_.end() || it->second.done || !it->second.pending.token_ids.empty();
  };
  if (timeout_s < 0)
    out_cv_.wait(lk, ready);
  else
    out_cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), ready);
  if (streams_.find(id) == streams_.end())
    throw UnknownRequestError("request " + std::to_string(id) + " was detached while get() waited");
  Stream& st = streams_.at(id);
  StreamChunk out = std::move(st.pending);
  st.pending = StreamChunk{};
  st.pending.num_prompt_tokens = out.num_prompt_tokens;
  const auto live = requests_.find(id);
  out.num_prefilled_tokens = live == requests_.end()
                                 ? out.num_prompt_tokens
                                 : std::min(live->second->num_computed_tokens, live->second->num_prompt_tokens);
  if (st.done) streams_.erase(id);
  return out;
}

void Engine::abort(int64_t id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = requests_.find(id);
    if (it == requests_.end()) {
      if (streams_.count(id)) return;  // already finished, output not yet taken
      throw UnknownRequestError("unknown request id " + std::to_string(id));
    }
    it->second->abort_requested = true;
    has_aborts_ = true;
  }
  work_cv_.notify_one();
}

void Engine::detach(int64_t id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto st = streams_.find(id);
    if (st == streams_.end()) return;
    if (st->second.done) {
      streams_.erase(st);
      return;
    }
    st->second.detached = true;
    requests_.at(id)->abort_requested = true;
    has_aborts_ = true;
  }
  work_cv_.notify_one();
}

void Engine::pause() {
  std::lock_guard<std::mutex> lk(mu_);
  steps_left_ = 0;
}

void Engine::resume(int64_t steps) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    steps_left_ = steps < 0 ? -1 : steps;
  }
  work_cv_.notify_one();
}

int Engine::num_streams() {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int>(streams_.size());
}

EngineStats Engine::stats() {
  std::lock_guard<std::mutex> lk(mu_);
  return EngineStats{scheduler_.num_running(),
                     scheduler_.num_waiting(),
                     blocks_.num_free_blocks(),
                     blocks_.num_blocks(),
                     blocks_.block_size(),
                     num_steps_,
                     scheduler_.num_preemptions(),
                     scheduler_.prefix_cache_hit_tokens(),
                     scheduler_.prefix_cache_query_tokens(),
                     num_prefill_tokens_,
                     num_decode_tokens_,
                     model_->kv_bytes(),
                     model_->weights_bytes(),
                     num_staged_,
                     time_,
                     backend_->late_workers(),
                     backend_->narrow_jobs(),
                     num_device_sampled_steps_,
                     num_row_group_steps_};
}

void Engine::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      work_cv_.wait(lk, [&] { return stop_ || (steps_left_ != 0 && (has_aborts_ || !scheduler_.empty())); });
      if (stop_) return;
    }
    if (!step()) {
      // Work exists but none can run now: wait for a change instead of spinning.
      std::unique_lock<std::mutex> lk(mu_);
      work_cv_.wait_for(lk, std::chrono::milliseconds(50));
    }
  }
}

// One step of the persistent batch: schedule, run, sample, publish.
bool Engine::step() {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point t0 = Clock::now();
  std::vector<ScheduledSeq> plan;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (steps_left_ == 0) return false;  // held (pause): no step starts, not even one the loop was about to take
    handle_aborts();
    plan = scheduler_.schedule();
    // resume(n) grants the steps that start after it (counted here, at the start: a step already in flight when
    // resume() was called must not use up the grant, or the request submitted for it would wait for ever).
    if (!plan.empty() && steps_left_ > 0) --steps_left_;
  }
  if (plan.empty()) return false;
  build_batch(plan);
  const Clock::time_point t1 = Clock::now();
  const float* logits = nullptr;
  std::string error;
  try {
    logits = model_->forward(batch_);
  } catch (const std::exception& e) {
    error = e.what();
  }
  const Clock::time_point t2 = Clock::now();
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++num_steps_;
    if (error.empty())
      postprocess(plan, logits);
    else
      for (const ScheduledSeq& s : plan) finish(s.req, FinishReason::Error, "forward pass failed: " + error);
    release_stages();
    const Clock::time_point t3 = Clock::now();
    auto ns = [](Clock::duration d) { return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(); };
    time_.schedule_ns += ns(t1 - t0);
    time_.forward_ns += ns(t2 - t1);
    time_.postprocess_ns += ns(t3 - t2);
  }
  out_cv_.notify_all();
  return true;
}

void Engine::build_batch(const std::vector<ScheduledSeq>& plan) {
  const int bs = options_.block_size;
  batch_.clear();
  logit_base_.assign(plan.size(), -1);
  int32_t num_logit_rows = 0;
  for (size_t s = 0; s < plan.size(); ++s) {
    const Request& r = *plan[s].req;
    const int n = plan[s].num_tokens, first = r.num_computed_tokens;
    const int64_t first_row = batch_.num_tokens();
    for (int pos = first; pos < first + n; ++pos) {
      const int32_t block = r.block_table[pos / bs];
      batch_.tokens.push_back(r.tokens[pos]);
      batch_.positions.push_back(pos);
      batch_.slots.push_back(static_cast<int64_t>(block) * bs + pos % bs);
      if (StageTable* staged = model_->staged_cache()) {
        staged->stage(block);
        if (pos % bs == bs - 1) batch_.sealed_blocks.push_back(block);
      }
    }
    batch_.seqs.push_back(SeqRows{first_row, n, r.block_table.data()});
    if (r.wants_prompt_outputs() && first < r.num_prompt_tokens) {
      logit_base_[s] = num_logit_rows;
      for (int j = 0; j < n; ++j) batch_.logit_rows.push_back(static_cast<int32_t>(first_row + j));
      num_logit_rows += n;
    } else if (first + n == r.num_tokens()) {
      logit_base_[s] = num_logit_rows;
      batch_.logit_rows.push_back(static_cast<int32_t>(first_row + n - 1));
      num_logit_rows += 1;
    }
  }
  // Sampling where the logits are, when every logit row wants only its next token (no prompt outputs): each row's
  // parameters, bans and distinct context tokens go to the device with the draw from its request's generator (taken
  // here, in the order postprocess would take it), and R token ids cross back instead of R x V logits.
  batch_.sample_on_device = num_logit_rows > 0 && model_->samples_on_device();
  for (size_t s = 0; s < plan.size() && batch_.sample_on_device; ++s) {
    const Request& r = *plan[s].req;
    if (logit_base_[s] >= 0 && r.wants_prompt_outputs() && r.num_computed_tokens < r.num_prompt_tokens)
      batch_.sample_on_device = false;
  }
  if (!batch_.sample_on_device) return;
  for (size_t s = 0; s < plan.size(); ++s) {
    if (logit_base_[s] < 0) continue;
    Request& r = *plan[s].req;
    const SamplingParams& p = r.params.sampling;
    RowSampling row;
    row.temperature = p.temperature;
    row.top_k = p.top_k;
    row.top_p = p.top_p;
    row.min_p = p.min_p;
    row.repetition_penalty = p.repetition_penalty;
    std::vector<int32_t>& ids = batch_.sampling_ids;
    row.penalized_begin = static_cast<int64_t>(ids.size());
    if (p.repetition_penalty != 1.f) {
      sampler_.distinct(r.tokens, model_->spec().vocab_size, distinct_);
      ids.insert(ids.end(), distinct_.begin(), distinct_.end());
    }
    row.penalized_end = row.banned_begin = static_cast<int64_t>(ids.size());
    if (r.num_generated() < r.params.min_new_tokens) {  // postprocess's bans
      ids.insert(ids.end(), r.params.stop_token_ids.begin(), r.params.stop_token_ids.end());
      if (!r.params.ignore_eos) ids.insert(ids.end(), r.params.eos_token_ids.begin(), r.params.eos_token_ids.end());
    }
    row.banned_end = static_cast<int64_t>(ids.size());
    if (p.temperature > 0.f) row.u = draw_unit(r.rng);
    batch_.sampling.push_back(row);
  }
}

// int4 K: after a step, only the partial last blocks of running requests keep their staging slots (a block
// sealed this step no longer needs its staged rows; a freed block's request is gone).
void Engine::release_stages() {
  StageTable* staged = model_->staged_cache();
  if (!staged) return;
  std::vector<int32_t> keep;
  const int bs = options_.block_size;
  for (const Request* r : scheduler_.running())
    if (r->num_computed_tokens % bs) keep.push_back(r->block_table[r->num_computed_tokens / bs]);
  staged->keep_stages(keep);
  num_staged_ = staged->num_staged();
}

void Engine::postprocess(const std::vector<ScheduledSeq>& plan, const float* logits) {
  const int V = model_->spec().vocab_size;
  const int32_t* drawn = batch_.sample_on_device ? model_->sampled_tokens() : nullptr;  // where the logits are
  num_device_sampled_steps_ += drawn != nullptr;
  num_row_group_steps_ += model_->last_row_groups() > 1;
  jobs_.clear();
  for (size_t s = 0; s < plan.size(); ++s) {
    Request* r = plan[s].req;
    const int n = plan[s].num_tokens, first = r->num_computed_tokens;
    r->num_computed_tokens += n;
    (first < r->num_prompt_tokens ? num_prefill_tokens_ : num_decode_tokens_) += n;
    blocks_.register_full_blocks(r->tokens, r->num_computed_tokens, r->block_table, r->num_hashed_blocks,
                                 r->last_block_hash);
    if (logit_base_[s] < 0) continue;
    float* rows = drawn ? nullptr : const_cast<float*>(logits) + static_cast<size_t>(logit_base_[s]) * V;
    if (r->wants_prompt_outputs() && first < r->num_prompt_tokens) {
      for (int j = 0; j < n && first + j < r->num_prompt_tokens; ++j) {
        const int pos = first + j;
        const float* row = rows + static_cast<size_t>(j) * V;
        if (r->params.prompt_logits)
          std::memcpy(&r->prompt_logits[static_cast<size_t>(pos) * V], row, V * sizeof(float));
        if (r->params.prompt_logprobs && pos + 1 < r->num_prompt_tokens)
          r->prompt_logprobs[pos] = Sampler::logprob(row, V, r->tokens[pos + 1]);
      }
      rows += static_cast<size_t>(n - 1) * V;  // the last row samples
    }
    if (r->num_computed_tokens < r->num_tokens()) continue;  // prefill continues next step
    if (r->abort_requested) {
      finish(r, FinishReason::Abort);
      continue;
    }
    if (r->num_generated() >= r->params.max_new_tokens || r->num_tokens() >= r->max_total_tokens) {
      finish(r, FinishReason::Length);
      continue;
    }
    SampleJob job{r, rows, {}, drawn ? drawn[logit_base_[s]] : -1};
    if (drawn) job.finite = job.token >= 0;  // -1: the row held NaN or +inf
    if (r->num_generated() < r->params.min_new_tokens) {
      job.bans = r->params.stop_token_ids;
      if (!r->params.ignore_eos)
        job.bans.insert(job.bans.end(), r->params.eos_token_ids.begin(), r->params.eos_token_ids.end());
    }
    jobs_.push_back(std::move(job));
  }
  // Every request's check and draw at once, across the pool (each row, its request's rng and a thread's own scratch).
  // NaN would make the sampler's sort undefined: such a row draws nothing and its request fails loudly below.
  backend_->host_parallel_for(static_cast<int64_t>(jobs_.size()), [&](int64_t b, int64_t e) {
    thread_local Sampler sampler;
    for (int64_t i = b; i < e; ++i) {
      SampleJob& j = jobs_[i];
      if (!j.logits) continue;  // its token came with the forward pass (sampled on the device)
      j.finite = Sampler::all_finite(j.logits, V);
      if (j.finite) j.token = sampler.sample(j.logits, V, j.req->params.sampling, j.req->tokens, j.bans, j.req->rng);
    }
  });
  for (const SampleJob& j : jobs_) {
    Request* r = j.req;
    if (!j.finite) {
      finish(r, FinishReason::Error,
             "the model produced non-finite logits (NaN or +inf) at position " + std::to_string(r->num_tokens() - 1) +
                 ": broken weights, or a kernel bug (LMRT_ISA=scalar runs the reference kernels)");
      continue;
    }
    const int32_t tok = j.token;
    r->tokens.push_back(tok);
    streams_.at(r->id).pending.token_ids.push_back(tok);
    auto contains = [tok](const std::vector<int32_t>& v) { return std::find(v.begin(), v.end(), tok) != v.end(); };
    if (contains(r->params.stop_token_ids) || (!r->params.ignore_eos && contains(r->params.eos_token_ids)))
      finish(r, FinishReason::Stop);
    else if (r->num_generated() >= r->params.max_new_tokens || r->num_tokens() >= r->max_total_tokens)
      finish(r, FinishReason::Length);
  }
}

void Engine::finish(Request* r, FinishReason reason, const std::string& error) {
  Stream& st = streams_.at(r->id);
  st.pending.finish_reason = reason;
  st.pending.error = error;
  st.pending.num_cached_tokens = r->num_cached_tokens;
  st.pending.num_preemptions = r->num_preemptions;
  st.pending.prompt_logprobs = std::move(r->prompt_logprobs);
  st.pending.prompt_logits = std::move(r->prompt_logits);
  st.done = true;
  if (st.detached) streams_.erase(r->id);
  scheduler_.remove(r);
  requests_.erase(r->id);  // r is gone after this
}

void Engine::handle_aborts() {
  if (!has_aborts_) return;
  has_aborts_ = false;
  std::vector<Request*> aborted;
  for (auto& kv : requests_)
    if (kv.second->abort_requested) aborted.push_back(kv.second.get());
  for (Request* r : aborted) finish(r, FinishReason::Abort);
}

}  // namespace lmrt
