#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
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

  if (p.temperature <= 0.f) return argmax(logits, V);

  // Candidates: every token within kNegligible of the best (after temperature). A token further below has a
  // probability under e^-50 of the best's (< 2e-22): it can matter to no top-k, top-p or min-p cut, nor to a
  // draw (53 bits), and leaving it out spares the exp of most of the vocabulary.
  constexpr float kNegligible = 50.0f;
  scaled_.resize(V);
  float best = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < V; ++i) best = std::max(best, scaled_[i] = logits[i] / p.temperature);
  float floor = best - kNegligible;
  const bool top_k = p.top_k > 0 && p.top_k < V;
  if (top_k) {  // the k-th largest value: a min-heap of the k largest (most values fail one comparison)
    heap_.clear();
    for (int i = 0; i < V; ++i) {
      const float x = scaled_[i];
      if (static_cast<int>(heap_.size()) < p.top_k) {
        heap_.push_back(x);
        if (static_cast<int>(heap_.size()) == p.top_k)
          std::make_heap(heap_.begin(), heap_.end(), std::greater<float>());
      } else if (x > heap_.front()) {
        std::pop_heap(heap_.begin(), heap_.end(), std::greater<float>());
        heap_.back() = x;
        std::push_heap(heap_.begin(), heap_.end(), std::greater<float>());
      }
    }
    floor = std::max(floor, heap_.front());
  }
  cand_.clear();
  for (int i = 0; i < V; ++i)
    if (scaled_[i] >= floor) cand_.emplace_back(scaled_[i], i);
  auto by_logit_desc = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t n = cand_.size();
  if (top_k && static_cast<size_t>(p.top_k) < n) {  // ties at the k-th value: the lower ids, as a full sort keeps
    std::nth_element(cand_.begin(), cand_.begin() + p.top_k, cand_.end(), by_logit_desc);
    n = p.top_k;
  }
  // Softmax over the n survivors, in double; the best has weight 1.
  weight_.resize(n);
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += weight_[i] = std::exp(static_cast<double>(cand_[i].first) - best);
  if (p.top_p < 1.f) {
    // The nucleus: the most probable survivors, in order, until their mass reaches top_p. Only the part that can
    // hold it is sorted: survivors within d of the best, d doubled until their mass reaches top_p.
    const double want = static_cast<double>(p.top_p) * sum;
    float d = 1.0f;
    for (;;) {  // weights by distance from the best: exp(-gap) >= exp(-d) for those within d
      double mass = 0.0;
      for (size_t i = 0; i < n; ++i)
        if (cand_[i].first >= best - d) mass += weight_[i];
      if (mass >= want || d >= kNegligible) break;
      d *= 2.0f;
    }
    const size_t m = d >= kNegligible ? n
                                      : static_cast<size_t>(std::partition(cand_.begin(), cand_.begin() + n,
                                                                           [&](const std::pair<float, int32_t>& c) {
                                                                             return c.first >= best - d;
                                                                           }) -
                                                            cand_.begin());
    std::sort(cand_.begin(), cand_.begin() + m, by_logit_desc);
    double cum = 0.0;
    size_t keep = 0;
    while (keep < m) {
      cum += std::exp(static_cast<double>(cand_[keep++].first) - best) / sum;
      if (cum >= p.top_p) break;
    }
    n = std::max<size_t>(keep, 1);
  }
  prob_.resize(n);
  double* prob = prob_.data();
  for (size_t i = 0; i < n; ++i) prob[i] = std::exp(static_cast<double>(cand_[i].first) - best) / sum;
  if (p.min_p > 0.f) {  // keep those at least min_p times the best's probability (1 / sum)
    const double thr = p.min_p / sum;
    size_t keep = 0;
    for (size_t i = 0; i < n; ++i)
      if (prob[i] >= thr) {
        cand_[keep] = cand_[i];
        prob[keep++] = prob[i];
      }
    n = std::max<size_t>(keep, 1);
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
