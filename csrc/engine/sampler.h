// Token selection from one row of logits: common/sampling.h's rule over a request's context and generator.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "common/sampling.h"
#include "engine/request.h"

namespace lmrt {

class Sampler {
 public:
  // Picks the next token. logits [V] is modified in place (penalties, bans).
  // Order as HF transformers: repetition penalty over `context`'s distinct tokens, bans, then temperature, top-k,
  // top-p, min-p, and a draw from `rng` (one 53-bit draw_unit, only when temperature > 0). Temperature 0 is greedy
  // (the first index of the maximum, as torch.argmax).
  int32_t sample(float* logits, int vocab_size, const SamplingParams& p, const std::vector<int32_t>& context,
                 const std::vector<int32_t>& banned, std::mt19937_64& rng);

  // log softmax(logits)[token], computed in double.
  static float logprob(const float* logits, int vocab_size, int32_t token);
  // False if any logit is NaN or +inf (then sample() would be undefined: its sort needs an order).
  static bool all_finite(const float* logits, int vocab_size);  // common/greedy.h's logits_finite
  // The first index of the maximum (torch.argmax's), for logits that are finite or -inf.
  static int32_t argmax(const float* logits, int vocab_size);  // common/greedy.h's first_argmax
  // context's distinct tokens in [0, V), in order of first appearance, into out (the repetition penalty's ids).
  void distinct(const std::vector<int32_t>& context, int vocab_size, std::vector<int32_t>& out);

 private:
  TokenPicker picker_;
  std::vector<int32_t> distinct_;  // [<= context] the context's distinct tokens
  std::vector<char> seen_;         // [V] scratch for distinct(), all 0 between calls
};

}  // namespace lmrt
