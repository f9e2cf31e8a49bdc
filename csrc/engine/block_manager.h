// Paged KV bookkeeping: block ids, reference counts and the prefix cache.
// Knows nothing of tensors: the KVCache owns the memory.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace lmrt {

class BlockManager {
 public:
  BlockManager(int num_blocks, int block_size, bool enable_prefix_caching);

  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  // Blocks no running request holds (cached-but-unused blocks count as free).
  int num_free_blocks() const { return num_free_; }
  int blocks_for(int num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

  // Reuses cached full blocks matching the start of tokens[0, max_tokens).
  // Appends them to table (taking a reference each) and returns the number of tokens they cover.
  // note: table must be empty; hash_out receives the hash chain value of the last matched block.
  int match_prefix(const std::vector<int32_t>& tokens, int max_tokens, std::vector<int32_t>& table, uint64_t& hash_out);

  // Grows table to cover num_tokens tokens.
  bool can_allocate(const std::vector<int32_t>& table, int num_tokens) const;
  void allocate(std::vector<int32_t>& table, int num_tokens);
  // Drops the table's references; blocks that reach zero become free (and stay
  // matchable by the prefix cache until reused).
  void deallocate(std::vector<int32_t>& table);

  // Registers the request's newly completed full blocks in the prefix cache.
  void register_full_blocks(const std::vector<int32_t>& tokens, int num_computed_tokens,
                            const std::vector<int32_t>& table, int& num_hashed_blocks, uint64_t& last_hash);

  int ref_count(int block) const { return ref_[block]; }
  int64_t num_cached_blocks() const { return static_cast<int64_t>(cached_.size()); }

 private:
  static uint64_t hash_block(uint64_t parent, const int32_t* tokens, int n);
  // An empty block (one the prefix cache does not hold) when there is one, the most recently freed first: its
  // lines are likely still in cache and its pages mapped (a pool is mapped lazily: Buffer), so a steady stream of
  // requests reuses the same few blocks instead of touching the whole pool. Else the least recently freed cached
  // block, its cache entry evicted.
  int pop_free();
  void push_free(int block);    // onto the empty stack, or at the most-recently-freed end of the cached list
  void unlink_free(int block);  // a cached block, off the cached list

  int num_blocks_, block_size_;
  bool prefix_caching_;
  std::vector<int> ref_;  // [num_blocks]
  // free blocks: the empty ones on a stack (most recently freed last), the cached ones on a list doubly linked over
  // block ids, oldest first
  std::vector<int> empty_;        // [<= num_blocks]
  std::vector<int> prev_, next_;  // [num_blocks]
  std::vector<char> in_free_;     // [num_blocks]
  int head_ = -1, tail_ = -1, num_free_ = 0;
  // prefix cache
  struct CachedBlock {
    uint64_t parent;
    std::vector<int32_t> tokens;  // [block_size] verified on match: a hash collision is never a hit
  };
  std::vector<uint64_t> hash_of_;             // [num_blocks] valid where has_hash_
  std::vector<char> has_hash_;                // [num_blocks]
  std::unordered_map<uint64_t, int> cached_;  // hash -> block
  std::vector<CachedBlock> cached_info_;      // [num_blocks]
};

}  // namespace lmrt
