#include "engine/scheduler.h"

#include <algorithm>
#include <stdexcept>

namespace lmrt {

Scheduler::Scheduler(SchedulerConfig cfg, BlockManager& blocks) : cfg_(cfg), blocks_(blocks) {
  if (cfg_.max_batch_size <= 0 || cfg_.max_num_batched_tokens <= 0)
    throw std::invalid_argument("scheduler: max_batch_size and max_num_batched_tokens must be positive");
}

void Scheduler::add(Request* r) { waiting_.push_back(r); }

void Scheduler::remove(Request* r) {
  auto rit = std::find(running_.begin(), running_.end(), r);
  if (rit != running_.end()) running_.erase(rit);
  auto wit = std::find(waiting_.begin(), waiting_.end(), r);
  if (wit != waiting_.end()) waiting_.erase(wit);
  blocks_.deallocate(r->block_table);
}

void Scheduler::preempt(Request* victim, int& budget, std::vector<ScheduledSeq>& out) {
  auto it = std::find_if(out.begin(), out.end(), [&](const ScheduledSeq& s) { return s.req == victim; });
  if (it != out.end()) {
    budget += it->num_tokens;
    out.erase(it);
  }
  running_.erase(std::find(running_.begin(), running_.end(), victim));
  blocks_.deallocate(victim->block_table);
  // Recompute later from scratch: prompt and generated tokens alike are re-prefilled.
  victim->num_computed_tokens = 0;
  victim->num_hashed_blocks = 0;
  victim->last_block_hash = 0;
  ++victim->num_preemptions;
  ++num_preemptions_;
  waiting_.push_front(victim);
}

bool Scheduler::try_schedule_running(Request* r, int& budget, std::vector<ScheduledSeq>& out) {
  const int n = std::min(r->num_uncomputed(), budget);
  if (n <= 0) return true;
  while (!blocks_.can_allocate(r->block_table, r->num_computed_tokens + n)) {
    Request* victim = running_.back();
    preempt(victim, budget, out);
    if (victim == r) return false;
  }
  blocks_.allocate(r->block_table, r->num_computed_tokens + n);
  out.push_back({r, n});
  budget -= n;
  return true;
}

bool Scheduler::try_admit(Request* r, int& budget, std::vector<ScheduledSeq>& out) {
  if (r->num_computed_tokens == 0 && r->block_table.empty() && !r->wants_prompt_outputs()) {
    // At least the last token is computed, so there are logits to sample from.
    const int matched = blocks_.match_prefix(r->tokens, r->num_tokens() - 1, r->block_table, r->last_block_hash);
    r->num_computed_tokens = matched;
    r->num_hashed_blocks = matched / blocks_.block_size();
    if (r->num_preemptions == 0) {
      r->num_cached_tokens = matched;
      prefix_cache_hit_tokens_ += matched;
      prefix_cache_query_tokens_ += r->num_tokens();
    }
  }
  const int n = std::min(r->num_uncomputed(), budget);
  if (n <= 0 || !blocks_.can_allocate(r->block_table, r->num_computed_tokens + n)) {
    blocks_.deallocate(r->block_table);
    r->num_computed_tokens = 0;
    r->num_hashed_blocks = 0;
    r->last_block_hash = 0;
    return false;
  }
  blocks_.allocate(r->block_table, r->num_computed_tokens + n);
  running_.push_back(r);
  out.push_back({r, n});
  budget -= n;
  return true;
}

std::vector<ScheduledSeq> Scheduler::schedule() {
  std::vector<ScheduledSeq> out;
  int budget = cfg_.max_num_batched_tokens;
  const int64_t preemptions_before = num_preemptions_;
  // Decoding rows first, so a long prompt never stalls the requests already streaming.
  for (int pass = 0; pass < 2; ++pass) {
    const std::vector<Request*> order = running_;  // preemption edits running_
    for (Request* r : order) {
      if (std::find(running_.begin(), running_.end(), r) == running_.end()) continue;
      const bool decoding = r->num_uncomputed() == 1;
      if (decoding != (pass == 0)) continue;
      try_schedule_running(r, budget, out);
    }
  }
  // Admission, unless this step had to preempt: the pool is full.
  while (num_preemptions_ == preemptions_before && !waiting_.empty() &&
         static_cast<int>(running_.size()) < cfg_.max_batch_size && budget > 0) {
    Request* r = waiting_.front();
    if (!try_admit(r, budget, out)) break;
    waiting_.pop_front();
  }
  return out;
}

}  // namespace lmrt
