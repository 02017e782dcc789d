#include "runtime/block_pool.h"

#include <cassert>

namespace gptoss {

BlockPool::BlockPool(int32_t num_blocks)
    : ref_(num_blocks, 0),
      next_(num_blocks + 1),
      prev_(num_blocks + 1),
      hash_(num_blocks),
      cached_(num_blocks, false) {
  next_[sentinel()] = prev_[sentinel()] = sentinel();
  // Handed out from id 0 upwards.
  for (int32_t b = 0; b < num_blocks; ++b) link_after(prev_[sentinel()], b);
  num_free_ = num_blocks;
}

void BlockPool::link_after(int32_t at, int32_t block) {
  next_[block] = next_[at];
  prev_[block] = at;
  prev_[next_[at]] = block;
  next_[at] = block;
}

void BlockPool::unlink(int32_t block) {
  next_[prev_[block]] = next_[block];
  prev_[next_[block]] = prev_[block];
}

int32_t BlockPool::take() {
  assert(num_free_ > 0);
  const int32_t block = next_[sentinel()];
  unlink(block);
  --num_free_;
  if (cached_[block]) {
    by_hash_.erase(hash_[block]);
    cached_[block] = false;
    ++evictions_;
  }
  ref_[block] = 1;
  return block;
}

void BlockPool::release(int32_t block) {
  assert(ref_[block] > 0);
  if (--ref_[block] > 0) return;
  // Uncached blocks at the front are reused first; cached ones queue at the
  // back, so the least recently released is evicted first.
  link_after(cached_[block] ? prev_[sentinel()] : sentinel(), block);
  ++num_free_;
}

int32_t BlockPool::find(const BlockHash& hash) const {
  auto it = by_hash_.find(hash);
  return it == by_hash_.end() ? -1 : it->second;
}

void BlockPool::share(int32_t block) {
  assert(cached_[block]);
  if (ref_[block]++ == 0) {
    unlink(block);
    --num_free_;
  }
}

void BlockPool::publish(int32_t block, const BlockHash& hash) {
  assert(ref_[block] > 0);
  if (cached_[block] || !by_hash_.emplace(hash, block).second) return;
  hash_[block] = hash;
  cached_[block] = true;
}

}  // namespace gptoss
