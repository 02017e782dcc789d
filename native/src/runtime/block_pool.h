// BlockPool: the physical KV blocks of one attention kind, reference counted,
// with the prefix cache's index over them (after vLLM v1's block_pool).
//
// A block is in use while sequences reference it. With no reference left it
// is free; a free block that still holds a published prompt block stays
// findable by its hash (a later request with the same prefix shares it)
// until it is needed for new KV. Free blocks are handed out in this order:
// never-cached ones first (most recently released first, which keeps the
// cache-off order a plain stack), then cached ones least recently released
// first; taking a cached block evicts it from the index.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "runtime/block_hash.h"

namespace gptoss {

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t size() const { return static_cast<int32_t>(ref_.size()); }
  // Blocks take() can hand out: free ones, cached or not.
  int32_t num_free() const { return num_free_; }
  // Blocks findable by hash, referenced or not.
  int32_t num_cached() const { return static_cast<int32_t>(by_hash_.size()); }
  uint64_t num_evictions() const { return evictions_; }
  int32_t ref_count(int32_t block) const { return ref_[block]; }

  // A block for new KV with one reference. Requires num_free() > 0.
  int32_t take();
  // Drops one reference.
  void release(int32_t block);

  // The block published under `hash`, or -1.
  int32_t find(const BlockHash& hash) const;
  // Adds a reference to a block found by hash, in use or free.
  void share(int32_t block);
  // Makes a referenced block whose KV is complete findable under `hash`. A
  // hash already held (two sequences computed the same prefix at once) keeps
  // its first block; this one stays private and is freed as usual.
  void publish(int32_t block, const BlockHash& hash);

 private:
  // The free list is doubly linked through next_/prev_; index size() is its
  // sentinel, next_[sentinel] the block take() hands out next.
  int32_t sentinel() const { return size(); }
  void link_after(int32_t at, int32_t block);
  void unlink(int32_t block);

  std::vector<int32_t> ref_;
  std::vector<int32_t> next_, prev_;
  std::vector<BlockHash> hash_;
  std::vector<bool> cached_;
  std::unordered_map<BlockHash, int32_t, BlockHashOf> by_hash_;
  int32_t num_free_ = 0;
  uint64_t evictions_ = 0;
};

}  // namespace gptoss
