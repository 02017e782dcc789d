#include "runtime/kv_cache_manager.h"

#include <algorithm>
#include <cassert>

namespace gptoss {

KvCacheManager::KvCacheManager(int32_t block_size, const int32_t (&num_blocks)[kNumAttnKinds],
                               const bool (&kind_used)[kNumAttnKinds], int32_t sliding_window, bool prefix_caching)
    : block_size_(block_size),
      sliding_window_(sliding_window),
      prefix_caching_(prefix_caching),
      kind_used_{kind_used[0], kind_used[1]},
      pools_{BlockPool(kind_used[0] ? num_blocks[0] : 0), BlockPool(kind_used[1] ? num_blocks[1] : 0)} {}

int32_t KvCacheManager::first_needed_sliding(int32_t start) const {
  // A query at `start` reads keys from start - sliding_window on: one more than
  // the window, so the boundary convention of the mask cannot matter.
  return std::max(0, start - sliding_window_) / block_size_;
}

int32_t KvCacheManager::peak_blocks(AttnKind kind, int32_t positions) const {
  if (!kind_used(kind) || positions <= 0) return 0;
  const int32_t all = blocks_for(positions);
  if (kind == AttnKind::Full) return all;
  // The window plus the current token can straddle one more block boundary.
  return std::min(all, blocks_for(sliding_window_ + 1) + 1);
}

int32_t KvCacheManager::max_allocatable(uint64_t seq, int32_t start, int32_t want) const {
  auto it = tables_.find(seq);
  int32_t limit = want;
  for (int k = 0; k < kNumAttnKinds; ++k) {
    if (!kind_used_[k]) continue;
    const int32_t have = it == tables_.end() ? 0 : static_cast<int32_t>(it->second.blocks[k].size());
    int32_t available = pools_[k].num_free();
    if (k == idx(AttnKind::Sliding) && it != tables_.end()) {
      // Blocks the window leaves behind, except those another sequence still
      // shares: releasing those frees nothing.
      const std::vector<int32_t>& sliding = it->second.blocks[k];
      const int32_t release_end = std::min(first_needed_sliding(start), have);
      for (int32_t b = it->second.first_live_sliding; b < release_end; ++b) {
        available += pools_[k].ref_count(sliding[b]) == 1;
      }
    }
    limit = std::min(limit, (have + available) * block_size_ - start);
  }
  return std::max(0, limit);
}

void KvCacheManager::allocate(uint64_t seq, int32_t start, int32_t n) {
  assert(n <= max_allocatable(seq, start, n));
  Tables& t = tables_[seq];
  if (kind_used(AttnKind::Sliding)) {
    std::vector<int32_t>& sliding = t.blocks[idx(AttnKind::Sliding)];
    const int32_t release_end = std::min(first_needed_sliding(start), static_cast<int32_t>(sliding.size()));
    for (; t.first_live_sliding < release_end; ++t.first_live_sliding) {
      pools_[idx(AttnKind::Sliding)].release(sliding[t.first_live_sliding]);
      sliding[t.first_live_sliding] = -1;
    }
  }
  const int32_t needed = blocks_for(start + n);
  for (int k = 0; k < kNumAttnKinds; ++k) {
    if (!kind_used_[k]) continue;
    while (static_cast<int32_t>(t.blocks[k].size()) < needed) t.blocks[k].push_back(pools_[k].take());
  }
}

void KvCacheManager::free(uint64_t seq) {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return;
  for (int k = 0; k < kNumAttnKinds; ++k) {
    // Last block first: a prompt's tail is evicted before its head, which
    // more requests share.
    const std::vector<int32_t>& blocks = it->second.blocks[k];
    for (auto b = blocks.rbegin(); b != blocks.rend(); ++b) {
      if (*b >= 0) pools_[k].release(*b);
    }
  }
  tables_.erase(it);
}

int32_t KvCacheManager::cached_prefix_blocks(const std::vector<BlockHash>& hashes, int32_t max_blocks) const {
  if (!prefix_caching_) return 0;
  int32_t n = std::min(max_blocks, static_cast<int32_t>(hashes.size()));
  if (kind_used(AttnKind::Full)) {
    const BlockPool& full = pools_[idx(AttnKind::Full)];
    int32_t run = 0;
    while (run < n && full.find(hashes[run]) >= 0) ++run;
    n = run;
  }
  if (kind_used(AttnKind::Sliding)) {
    // The longest prefix whose window blocks all survive: a missing block at
    // index m rules out every prefix longer than m whose window covers it.
    const BlockPool& sliding = pools_[idx(AttnKind::Sliding)];
    while (n > 0) {
      int32_t missing = -1;
      for (int32_t b = n - 1; b >= first_needed_sliding(n * block_size_); --b) {
        if (sliding.find(hashes[b]) < 0) {
          missing = b;
          break;
        }
      }
      if (missing < 0) break;
      n = missing;
    }
  }
  return n;
}

void KvCacheManager::attach_cached_prefix(uint64_t seq, const std::vector<BlockHash>& hashes, int32_t n_blocks) {
  assert(n_blocks <= cached_prefix_blocks(hashes, n_blocks));
  Tables& t = tables_[seq];
  assert(t.blocks[0].empty() && t.blocks[1].empty());
  for (int k = 0; k < kNumAttnKinds; ++k) {
    if (!kind_used_[k]) continue;
    const bool sliding = k == idx(AttnKind::Sliding);
    const int32_t first = sliding ? first_needed_sliding(n_blocks * block_size_) : 0;
    t.blocks[k].assign(first, -1);
    for (int32_t i = first; i < n_blocks; ++i) {
      const int32_t block = pools_[k].find(hashes[i]);
      pools_[k].share(block);
      t.blocks[k].push_back(block);
    }
    if (sliding) t.first_live_sliding = first;
  }
  t.num_published = n_blocks;
}

void KvCacheManager::cache_full_blocks(uint64_t seq, const std::vector<BlockHash>& hashes, int32_t n_blocks) {
  if (!prefix_caching_) return;
  auto it = tables_.find(seq);
  if (it == tables_.end()) return;
  Tables& t = it->second;
  // Called after every step that computed positions, so a block is published
  // in the step that completes it, before the window can release it.
  for (; t.num_published < n_blocks; ++t.num_published) {
    for (int k = 0; k < kNumAttnKinds; ++k) {
      if (!kind_used_[k]) continue;
      const int32_t block = t.blocks[k][t.num_published];
      assert(block >= 0);
      pools_[k].publish(block, hashes[t.num_published]);
    }
  }
}

const std::vector<int32_t>& KvCacheManager::table(uint64_t seq, AttnKind kind) const {
  static const std::vector<int32_t> kEmpty;
  auto it = tables_.find(seq);
  return it == tables_.end() ? kEmpty : it->second.blocks[idx(kind)];
}

int32_t KvCacheManager::num_used() const { return num_total() - pools_[0].num_free() - pools_[1].num_free(); }

int32_t KvCacheManager::num_total() const { return pools_[0].size() + pools_[1].size(); }

int32_t KvCacheManager::num_cached() const { return pools_[0].num_cached() + pools_[1].num_cached(); }

uint64_t KvCacheManager::num_evictions() const { return pools_[0].num_evictions() + pools_[1].num_evictions(); }

}  // namespace gptoss
