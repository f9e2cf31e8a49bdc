#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/greedy.h"

namespace lmrt {

float Sampler::logprob(const float* logits, int V, int32_t token) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0.0;
  for (int i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return static_cast<float>(static_cast<double>(logits[token]) - mx - std::log(sum));
}

bool Sampler::all_finite(const float* logits, int V) { return logits_finite(logits, V); }

int32_t Sampler::argmax(const float* logits, int V) { return first_argmax(logits, V); }

void Sampler::distinct(const std::vector<int32_t>& context, int V, std::vector<int32_t>& out) {
  out.clear();
  seen_.resize(V, 0);
  for (int32_t t : context)
    if (t >= 0 && t < V && !seen_[t]) {
      seen_[t] = 1;
      out.push_back(t);
    }
  for (int32_t t : out) seen_[t] = 0;
}

int32_t Sampler::sample(float* logits, int V, const SamplingParams& p, const std::vector<int32_t>& context,
                        const std::vector<int32_t>& banned, std::mt19937_64& rng) {
  if (p.repetition_penalty != 1.f) {
    distinct(context, V, distinct_);
    penalize(logits, V, distinct_.data(), static_cast<int64_t>(distinct_.size()), p.repetition_penalty);
  }
  ban(logits, V, banned.data(), static_cast<int64_t>(banned.size()));
  if (p.temperature <= 0.f) return argmax(logits, V);
  return picker_.pick(logits, V, p.temperature, p.top_k, p.top_p, p.min_p, draw_unit(rng));
}

}  // namespace lmrt
