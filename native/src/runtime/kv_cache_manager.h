// KvCacheManager: paged KV blocks and per-sequence block tables.
//
// One pool per attention kind (full, sliding window), because the two kinds
// hold different layers and so have different block sizes in bytes. A
// sequence's table maps logical block (position / block_size) to a physical
// block. Sliding-window layers only ever read the last `sliding_window`
// positions, so blocks that fall entirely before the window go back to the
// pool and their table entries become -1. The manager knows nothing of
// requests or kernels: only sequence ids, positions and block hashes.
//
// Prefix caching (when enabled): a sequence's full blocks are published under
// their chained hashes (block_hash.h) once computed, and a new sequence whose
// leading block hashes are found starts with those blocks shared instead of
// computing them. Both kinds are restored: every full-attention block of the
// prefix, and the sliding blocks the window of the first uncomputed position
// reads, which stay cached after the sequence released them. A prefix whose
// sliding blocks were evicted is reused only as far back as they survive.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "model/config.h"
#include "runtime/block_hash.h"
#include "runtime/block_pool.h"

namespace gptoss {

class KvCacheManager {
 public:
  // `num_blocks[kind]` physical blocks per pool; a kind with zero blocks and
  // `kind_used[kind] == false` (no layer of that kind) is skipped entirely.
  KvCacheManager(int32_t block_size, const int32_t (&num_blocks)[kNumAttnKinds],
                 const bool (&kind_used)[kNumAttnKinds], int32_t sliding_window, bool prefix_caching);

  int32_t block_size() const { return block_size_; }
  bool prefix_caching() const { return prefix_caching_; }
  bool kind_used(AttnKind kind) const { return kind_used_[idx(kind)]; }

  // Blocks of `kind` one sequence needs at once to compute `positions`
  // positions, one token per step at the end: the most it can ever hold.
  int32_t peak_blocks(AttnKind kind, int32_t positions) const;
  int32_t total_blocks(AttnKind kind) const { return pools_[idx(kind)].size(); }

  // The largest n <= want for which positions [start, start + n) of `seq` can
  // get blocks now, counting the sliding blocks that `allocate` would release.
  int32_t max_allocatable(uint64_t seq, int32_t start, int32_t want) const;

  // Releases the sequence's sliding blocks that fell out of the window of
  // `start`, then maps every position of [start, start + n) to a block.
  // Requires n <= max_allocatable(seq, start, n).
  void allocate(uint64_t seq, int32_t start, int32_t n);

  // Drops the sequence's references to its blocks; blocks nobody else
  // references go back to the pools (cached ones stay findable).
  void free(uint64_t seq);

  // How many leading blocks of a sequence whose full blocks hash to `hashes`
  // the cache can restore, at most `max_blocks`: 0 when caching is off.
  int32_t cached_prefix_blocks(const std::vector<BlockHash>& hashes, int32_t max_blocks) const;
  // Gives `seq`, which holds no blocks, the first `n_blocks` cached blocks
  // (n_blocks <= cached_prefix_blocks(hashes, n_blocks)): its positions
  // [0, n_blocks * block_size) are then computed.
  void attach_cached_prefix(uint64_t seq, const std::vector<BlockHash>& hashes, int32_t n_blocks);
  // Publishes the sequence's first `n_blocks` blocks, whose every position is
  // computed, under `hashes`; blocks published before are skipped. No-op
  // when caching is off.
  void cache_full_blocks(uint64_t seq, const std::vector<BlockHash>& hashes, int32_t n_blocks);

  // The sequence's table for `kind` (empty when it has none).
  const std::vector<int32_t>& table(uint64_t seq, AttnKind kind) const;

  // Blocks referenced by a sequence (cached blocks nobody references are not used).
  int32_t num_used() const;
  int32_t num_total() const;
  // Blocks findable in the prefix cache, and how many were evicted for new KV, over both pools.
  int32_t num_cached() const;
  uint64_t num_evictions() const;

 private:
  struct Tables {
    std::vector<int32_t> blocks[kNumAttnKinds];
    int32_t first_live_sliding = 0;  // logical sliding blocks before this are released (-1)
    int32_t num_published = 0;       // leading blocks already offered to the prefix cache
  };

  static int idx(AttnKind kind) { return static_cast<int>(kind); }
  // First logical sliding block a chunk starting at `start` still reads.
  int32_t first_needed_sliding(int32_t start) const;
  int32_t blocks_for(int32_t positions) const { return (positions + block_size_ - 1) / block_size_; }

  const int32_t block_size_;
  const int32_t sliding_window_;
  const bool prefix_caching_;
  bool kind_used_[kNumAttnKinds];
  BlockPool pools_[kNumAttnKinds];
  std::unordered_map<uint64_t, Tables> tables_;
};

}  // namespace gptoss
