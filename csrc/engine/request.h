// A request's parameters and its state inside the engine.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace lmrt {

struct SamplingParams {
  float temperature = 0.f;         // 0 = greedy
  int top_k = 0;                   // 0 = off
  float top_p = 1.f;               // 1 = off
  float min_p = 0.f;               // 0 = off
  float repetition_penalty = 1.f;  // 1 = off (HF semantics: divide positive logits, multiply negative)
  uint64_t seed = 0;
  bool has_seed = false;
};

struct RequestParams {
  int max_new_tokens = 0;
  int min_new_tokens = 0;
  SamplingParams sampling;
  std::vector<int32_t> eos_token_ids;   // stop unless ignore_eos
  std::vector<int32_t> stop_token_ids;  // always stop
  bool ignore_eos = false;
  bool prompt_logprobs = false;  // log p(token[i+1] | tokens[..i]) for the prompt
  bool prompt_logits = false;    // full logits [num_prompt_tokens, V] (tests, perplexity tools)
};

enum class FinishReason { None, Stop, Length, Abort, Error };

inline const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Abort: return "abort";
    case FinishReason::Error: return "error";
    default: return "";
  }
}

struct Request {
  int64_t id = 0;
  std::vector<int32_t> tokens;  // [num_tokens] prompt, then generated tokens
  int num_prompt_tokens = 0;
  int num_computed_tokens = 0;       // tokens whose K/V are in the cache
  int max_total_tokens = 0;          // prompt + max_new_tokens, capped by session_len
  std::vector<int32_t> block_table;  // [ceil(num_computed_tokens / block_size)] at least
  int num_hashed_blocks = 0;         // leading blocks registered in the prefix cache
  uint64_t last_block_hash = 0;      // hash chain value of block num_hashed_blocks - 1
  int num_cached_tokens = 0;         // prompt tokens served by the prefix cache at admission
  RequestParams params;
  std::mt19937_64 rng;
  bool abort_requested = false;
  int num_preemptions = 0;

  std::vector<float> prompt_logprobs;  // [num_prompt_tokens - 1]
  std::vector<float> prompt_logits;    // [num_prompt_tokens, V]

  int num_tokens() const { return static_cast<int>(tokens.size()); }
  int num_generated() const { return num_tokens() - num_prompt_tokens; }
  int num_uncomputed() const { return num_tokens() - num_computed_tokens; }
  bool wants_prompt_outputs() const { return params.prompt_logprobs || params.prompt_logits; }
};

}  // namespace lmrt
