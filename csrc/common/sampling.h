// A logits row's token, the engine's sampling rule in one place for its sampler (engine/sampler.cpp) and the op
// sets' sampling where the logits are (the CPU op set runs sample_row; the CUDA op set's kernel,
// kernels/cuda/sampling.cu, keeps the same rule): as HF transformers, the repetition penalty over the context's
// distinct tokens, then bans, then greedy (temperature 0), or temperature, top-k, top-p, min-p and a draw.
// The draw walks the survivors in token-id order (an order any device can keep), at u times their total mass.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "common/greedy.h"
#include "kernels/ops.h"

namespace lmrt {

// Where a candidate's scaled logit is further than this below the best, its probability is under e^-50 of the
// best's (< 2e-22): it can matter to no top-k, top-p or min-p cut, nor to a draw of 53 bits, and leaving it out
// spares the exp of most of the vocabulary.
constexpr float kNegligibleLogit = 50.0f;

// The draw a request's generator gives a sampled step: 53 bits, in [0, 1).
inline double draw_unit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0); }

// HF's repetition penalty over ids (distinct, out-of-range ones skipped): positive logits divided, others multiplied.
inline void penalize(float* logits, int64_t V, const int32_t* ids, int64_t n, float penalty) {
  for (int64_t j = 0; j < n; ++j) {
    const int32_t t = ids[j];
    if (t < 0 || t >= V) continue;
    logits[t] = logits[t] > 0 ? logits[t] / penalty : logits[t] * penalty;
  }
}

// Tokens that may not be drawn: their logits -inf.
inline void ban(float* logits, int64_t V, const int32_t* ids, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    if (ids[j] >= 0 && ids[j] < V) logits[ids[j]] = -std::numeric_limits<float>::infinity();
}

// temperature, top-k, top-p, min-p and the draw, with its scratch (one per thread).
class TokenPicker {
 public:
  // The token drawn at u in [0, 1) from logits [V] (finite or -inf; all -inf: 0, as greedy), temperature > 0:
  //  - scaled = logits / temperature (fp32); candidates: within kNegligibleLogit of the best;
  //  - top_k (0 < k < V): the k first in (scaled descending, id ascending) order;
  //  - top_p (< 1): in that order, each survivor while the probability mass before it (weights exp(scaled - best)
  //    in double, over their sum) is below top_p (the first always);
  //  - min_p (> 0): those whose probability is at least min_p times the best's;
  //  - the draw: the first survivor in id order whose running sum of probabilities exceeds u times their total.
  int32_t pick(const float* logits, int64_t V, float temperature, int top_k, float top_p, float min_p, double u) {
    scaled_.resize(V);
    float best = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < V; ++i) best = std::max(best, scaled_[i] = logits[i] / temperature);
    if (best == -std::numeric_limits<float>::infinity()) return 0;  // every token banned: greedy's answer
    float floor = best - kNegligibleLogit;
    const bool cut_k = top_k > 0 && top_k < V;
    if (cut_k) {  // the k-th largest value: a min-heap of the k largest (most values fail one comparison)
      heap_.clear();
      for (int64_t i = 0; i < V; ++i) {
        const float x = scaled_[i];
        if (static_cast<int>(heap_.size()) < top_k) {
          heap_.push_back(x);
          if (static_cast<int>(heap_.size()) == top_k)
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
    for (int64_t i = 0; i < V; ++i)
      if (scaled_[i] >= floor) cand_.emplace_back(scaled_[i], static_cast<int32_t>(i));
    auto by_logit_desc = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    bool id_order = true;  // cand_[0, n) ascending by id
    size_t n = cand_.size();
    if (cut_k && static_cast<size_t>(top_k) < n) {  // ties at the k-th value: the lower ids
      std::nth_element(cand_.begin(), cand_.begin() + top_k, cand_.end(), by_logit_desc);
      n = top_k;
      id_order = false;
    }
    // Softmax over the n survivors, in double; the best has weight 1.
    weight_.resize(n);
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i) sum += weight_[i] = std::exp(static_cast<double>(cand_[i].first) - best);
    if (top_p < 1.f) {
      // The nucleus: only the part that can hold it is sorted: survivors within d of the best, d doubled until
      // their mass reaches top_p (weights by distance from the best: exp(-gap) >= exp(-d) for those within d).
      const double want = static_cast<double>(top_p) * sum;
      float d = 1.0f;
      for (;;) {
        double mass = 0.0;
        for (size_t i = 0; i < n; ++i)
          if (cand_[i].first >= best - d) mass += weight_[i];
        if (mass >= want || d >= kNegligibleLogit) break;
        d *= 2.0f;
      }
      const size_t m = d >= kNegligibleLogit
                           ? n
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
        if (cum >= top_p) break;
      }
      n = std::max<size_t>(keep, 1);
      id_order = n == 1;
    }
    if (!id_order) by_id(n, V);
    prob_.resize(n);
    double* prob = prob_.data();
    for (size_t i = 0; i < n; ++i) prob[i] = std::exp(static_cast<double>(cand_[i].first) - best) / sum;
    if (min_p > 0.f) {  // keep those at least min_p times the best's probability (1 / sum); the best always
      const double thr = min_p / sum;
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
    const double target = u * total;
    double acc = 0.0;
    for (size_t i = 0; i < n; ++i) {
      acc += prob[i];
      if (target < acc) return cand_[i].second;
    }
    return cand_[n - 1].second;
  }

 private:
  // cand_[0, n) in ascending id order: a sort for a few survivors, else (a wide nucleus) a pass over the ids.
  void by_id(size_t n, int64_t V) {
    if (static_cast<int64_t>(n) * 16 < V) {
      std::sort(
          cand_.begin(), cand_.begin() + n,
          [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) { return a.second < b.second; });
      return;
    }
    logit_of_.assign(V, std::numeric_limits<float>::quiet_NaN());  // NaN: not a survivor (survivors are finite)
    for (size_t i = 0; i < n; ++i) logit_of_[cand_[i].second] = cand_[i].first;
    size_t k = 0;
    for (int64_t id = 0; id < V; ++id)
      if (logit_of_[id] == logit_of_[id]) cand_[k++] = {logit_of_[id], static_cast<int32_t>(id)};
  }

  std::vector<float> logit_of_;                  // [V] by_id's scratch
  std::vector<std::pair<float, int32_t>> cand_;  // [<= V] (scaled logit, token id) of the candidates
  std::vector<double> prob_;                     // [n] probabilities of the survivors, in cand_ order
  std::vector<float> scaled_;                    // [V] logits / temperature
  std::vector<double> weight_;                   // [n] exp(scaled logit - best) of the survivors, in cand_ order
  std::vector<float> heap_;                      // [top_k] the largest scaled logits (a min-heap)
};

// An op set's sampling of one row (DeviceOps::sample): -1 where a logit is NaN or +inf (before the penalties, as the
// engine checks); else the penalty and bans applied to logits [V] in place, then greedy or p's draw.
inline int32_t sample_row(float* logits, int64_t V, const RowSampling& p, const int32_t* ids, TokenPicker& picker) {
  if (!logits_finite(logits, V)) return -1;
  if (p.repetition_penalty != 1.f)
    penalize(logits, V, ids + p.penalized_begin, p.penalized_end - p.penalized_begin, p.repetition_penalty);
  ban(logits, V, ids + p.banned_begin, p.banned_end - p.banned_begin);
  if (p.temperature <= 0.f) return first_argmax(logits, V);
  return picker.pick(logits, V, p.temperature, p.top_k, p.top_p, p.min_p, p.u);
}

}  // namespace lmrt
