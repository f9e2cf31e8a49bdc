#include "engine/block_manager.h"

#include <algorithm>
#include <stdexcept>

namespace lmrt {

BlockManager::BlockManager(int num_blocks, int block_size, bool enable_prefix_caching)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      prefix_caching_(enable_prefix_caching),
      ref_(num_blocks, 0),
      prev_(num_blocks, -1),
      next_(num_blocks, -1),
      in_free_(num_blocks, 0),
      hash_of_(num_blocks, 0),
      has_hash_(num_blocks, 0),
      cached_info_(num_blocks) {
  if (num_blocks <= 0 || block_size <= 0) throw std::invalid_argument("BlockManager: sizes must be positive");
  empty_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) push_free(b);  // block 0 on top
}

uint64_t BlockManager::hash_block(uint64_t parent, const int32_t* tokens, int n) {
  // FNV-1a over the parent hash and the token ids, then a final avalanche (splitmix64).
  uint64_t h = 1469598103934665603ull ^ parent;
  for (int i = 0; i < n; ++i) {
    h ^= static_cast<uint32_t>(tokens[i]);
    h *= 1099511628211ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

void BlockManager::push_free(int b) {
  in_free_[b] = 1;
  ++num_free_;
  if (!has_hash_[b]) {
    empty_.push_back(b);
    return;
  }
  prev_[b] = tail_;
  next_[b] = -1;
  if (tail_ >= 0)
    next_[tail_] = b;
  else
    head_ = b;
  tail_ = b;
}

void BlockManager::unlink_free(int b) {
  if (prev_[b] >= 0)
    next_[prev_[b]] = next_[b];
  else
    head_ = next_[b];
  if (next_[b] >= 0)
    prev_[next_[b]] = prev_[b];
  else
    tail_ = prev_[b];
  prev_[b] = next_[b] = -1;
  in_free_[b] = 0;
  --num_free_;
}

int BlockManager::pop_free() {
  if (!empty_.empty()) {
    const int b = empty_.back();
    empty_.pop_back();
    in_free_[b] = 0;
    --num_free_;
    return b;
  }
  if (head_ < 0) throw std::logic_error("BlockManager: no free block (call can_allocate first)");
  const int b = head_;
  unlink_free(b);
  if (has_hash_[b]) {
    cached_.erase(hash_of_[b]);
    has_hash_[b] = 0;
  }
  return b;
}

int BlockManager::match_prefix(const std::vector<int32_t>& tokens, int max_tokens, std::vector<int32_t>& table,
                               uint64_t& hash_out) {
  if (!table.empty()) throw std::logic_error("match_prefix: table must be empty");
  hash_out = 0;
  if (!prefix_caching_) return 0;
  const int num_full = std::min<int>(max_tokens, static_cast<int>(tokens.size())) / block_size_;
  uint64_t h = 0;
  for (int i = 0; i < num_full; ++i) {
    const int32_t* t = tokens.data() + static_cast<size_t>(i) * block_size_;
    const uint64_t hi = hash_block(h, t, block_size_);
    auto it = cached_.find(hi);
    if (it == cached_.end()) break;
    const int b = it->second;
    const CachedBlock& info = cached_info_[b];
    if (info.parent != h || !std::equal(info.tokens.begin(), info.tokens.end(), t)) break;
    if (in_free_[b]) unlink_free(b);
    ++ref_[b];
    table.push_back(b);
    h = hi;
  }
  hash_out = h;
  return static_cast<int>(table.size()) * block_size_;
}

bool BlockManager::can_allocate(const std::vector<int32_t>& table, int num_tokens) const {
  const int need = blocks_for(num_tokens) - static_cast<int>(table.size());
  return need <= num_free_;
}

void BlockManager::allocate(std::vector<int32_t>& table, int num_tokens) {
  const int target = blocks_for(num_tokens);
  while (static_cast<int>(table.size()) < target) {
    const int b = pop_free();
    ref_[b] = 1;
    table.push_back(b);
  }
}

void BlockManager::deallocate(std::vector<int32_t>& table) {
  // Freed in reverse so that a chain's tail is evicted before its head.
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    const int b = *it;
    if (ref_[b] <= 0) throw std::logic_error("BlockManager: double free");
    if (--ref_[b] == 0) push_free(b);
  }
  table.clear();
}

void BlockManager::register_full_blocks(const std::vector<int32_t>& tokens, int num_computed_tokens,
                                        const std::vector<int32_t>& table, int& num_hashed_blocks,
                                        uint64_t& last_hash) {
  if (!prefix_caching_) return;
  const int num_full = num_computed_tokens / block_size_;
  for (int i = num_hashed_blocks; i < num_full; ++i) {
    const int32_t* t = tokens.data() + static_cast<size_t>(i) * block_size_;
    const uint64_t h = hash_block(last_hash, t, block_size_);
    const int b = table[i];
    if (!has_hash_[b] && cached_.find(h) == cached_.end()) {
      cached_[h] = b;
      hash_of_[b] = h;
      has_hash_[b] = 1;
      cached_info_[b] = CachedBlock{last_hash, std::vector<int32_t>(t, t + block_size_)};
    }
    last_hash = h;
    num_hashed_blocks = i + 1;
  }
}

}  // namespace lmrt
