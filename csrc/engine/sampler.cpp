#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace lmrt {

float Sampler::logprob(const float* logits, int V, int32_t token) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0.0;
  for (int i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return static_cast<float>(static_cast<double>(logits[token]) - mx - std::log(sum));
}

bool Sampler::all_finite(const float* logits, int V) {
  bool ok = true;  // no early exit: one branch-free pass (-inf is fine: a banned or impossible token)
  for (int i = 0; i < V; ++i) ok &= logits[i] < std::numeric_limits<float>::infinity();
  return ok;
}

int32_t Sampler::sample(float* logits, int V, const SamplingParams& p, const std::vector<int32_t>& context,
                        const std::vector<int32_t>& banned, std::mt19937_64& rng) {
  if (p.repetition_penalty != 1.f) {
    seen_.assign(V, 0);
    for (int32_t t : context) {
      if (t < 0 || t >= V || seen_[t]) continue;
      seen_[t] = 1;
      logits[t] = logits[t] > 0 ? logits[t] / p.repetition_penalty : logits[t] * p.repetition_penalty;
    }
  }
  for (int32_t t : banned)
    if (t >= 0 && t < V) logits[t] = -std::numeric_limits<float>::infinity();

  if (p.temperature <= 0.f) return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);

  cand_.resize(V);
  for (int i = 0; i < V; ++i) cand_[i] = {logits[i] / p.temperature, i};
  auto by_logit_desc = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t n = cand_.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < n) {
    std::nth_element(cand_.begin(), cand_.begin() + p.top_k, cand_.end(), by_logit_desc);
    n = p.top_k;
  }
  std::sort(cand_.begin(), cand_.begin() + n, by_logit_desc);
  // softmax over the survivors, in double
  const double mx = cand_[0].first;
  prob_.resize(n);
  double* prob = prob_.data();
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp(static_cast<double>(cand_[i].first) - mx);
  for (size_t i = 0; i < n; ++i) prob[i] /= sum;
  if (p.top_p < 1.f) {
    double cum = 0.0;
    size_t keep = 0;
    while (keep < n) {
      cum += prob[keep++];
      if (cum >= p.top_p) break;
    }
    n = std::max<size_t>(keep, 1);
  }
  if (p.min_p > 0.f) {
    const double thr = p.min_p * prob[0];
    size_t keep = 1;
    while (keep < n && prob[keep] >= thr) ++keep;
    n = keep;
  }
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) total += prob[i];
  const double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0) * total;
  double acc = 0.0;
  for (size_t i = 0; i < n; ++i) {
    acc += prob[i];
    if (u < acc) return cand_[i].second;
  }
  return cand_[n - 1].second;
}

}  // namespace lmrt
