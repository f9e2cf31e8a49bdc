// The persistent batch: which requests run this step and how many of their
// tokens. Decoding rows first, then prefill chunks, then new admissions, all
// under one token budget; preempts the newest request when the KV pool is full.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/block_manager.h"
#include "engine/request.h"

namespace lmrt {

struct SchedulerConfig {
  int max_batch_size;          // running requests at most
  int max_num_batched_tokens;  // rows per forward at most
};

// Computes tokens [req->num_computed_tokens, + num_tokens) of req this step.
struct ScheduledSeq {
  Request* req;
  int num_tokens;
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig cfg, BlockManager& blocks);

  void add(Request* r);  // joins the waiting queue (FIFO)
  // note: afterwards every scheduled request owns blocks for all the tokens it computes.
  std::vector<ScheduledSeq> schedule();
  // Removes a request from whichever queue holds it and frees its blocks.
  void remove(Request* r);

  bool empty() const { return waiting_.empty() && running_.empty(); }
  const std::deque<Request*>& waiting() const { return waiting_; }
  const std::vector<Request*>& running() const { return running_; }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  int64_t num_preemptions() const { return num_preemptions_; }
  int64_t prefix_cache_hit_tokens() const { return prefix_cache_hit_tokens_; }
  int64_t prefix_cache_query_tokens() const { return prefix_cache_query_tokens_; }

 private:
  bool try_schedule_running(Request* r, int& budget, std::vector<ScheduledSeq>& out);
  void preempt(Request* victim, int& budget, std::vector<ScheduledSeq>& out);
  bool try_admit(Request* r, int& budget, std::vector<ScheduledSeq>& out);

  SchedulerConfig cfg_;
  BlockManager& blocks_;
  std::deque<Request*> waiting_;
  std::vector<Request*> running_;  // admission order: the back is the newest
  int64_t num_preemptions_ = 0;
  int64_t prefix_cache_hit_tokens_ = 0;
  int64_t prefix_cache_query_tokens_ = 0;
};

}  // namespace lmrt
