// Token selection from one row of logits.
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "engine/request.h"

namespace lmrt {

class Sampler {
 public:
  // Picks the next token. logits [V] is modified in place (penalties, bans).
  // Order as HF transformers: repetition penalty over `context`, bans, then
  // temperature, top-k, top-p, min-p, and a draw from `rng`. Temperature 0 is greedy
  // (the first index of the maximum, as torch.argmax).
  int32_t sample(float* logits, int vocab_size, const SamplingParams& p, const std::vector<int32_t>& context,
                 const std::vector<int32_t>& banned, std::mt19937_64& rng);

  // log softmax(logits)[token], computed in double.
  static float logprob(const float* logits, int vocab_size, int32_t token);
  // False if any logit is NaN or +inf (then sample() would be undefined: its sort needs an order).
  static bool all_finite(const float* logits, int vocab_size);  // common/greedy.h's logits_finite
  // The first index of the maximum (torch.argmax's), for logits that are finite or -inf.
  static int32_t argmax(const float* logits, int vocab_size);  // common/greedy.h's first_argmax

 private:
  std::vector<std::pair<float, int32_t>> cand_;  // [<= V] (scaled logit, token id) of the candidates
  std::vector<double> prob_;                     // [V] probabilities of the candidates
  std::vector<float> scaled_;                    // [V] logits / temperature
  std::vector<double> weight_;                   // [n] exp(scaled logit - best) of the survivors, in cand_ order
  std::vector<float> heap_;                      // [top_k] the largest scaled logits (a min-heap)
  std::vector<char> seen_;                       // [V] scratch for the repetition penalty
};

}  // namespace lmrt
