// KvCacheManager: block accounting, sliding-window release, exhaustion.
#include "runtime/kv_cache_manager.h"

#include <algorithm>
#include <set>

#include "runtime_test_support.h"

using namespace gptoss;

namespace {

constexpr int32_t kBlock = 4;
constexpr int32_t kWindow = 8;

KvCacheManager make_manager(int32_t full_blocks, int32_t sliding_blocks) {
  const int32_t blocks[kNumAttnKinds] = {full_blocks, sliding_blocks};
  const bool used[kNumAttnKinds] = {true, true};
  return KvCacheManager(kBlock, blocks, used, kWindow, /*prefix_caching=*/false);
}

}  // namespace

TEST(allocates_blocks_for_every_position_and_frees_them) {
  KvCacheManager kv = make_manager(10, 10);
  CHECK_EQ(kv.max_allocatable(1, 0, 9), 9);
  kv.allocate(1, 0, 9);  // positions 0..8: 3 blocks per kind
  CHECK_EQ(kv.table(1, AttnKind::Full).size(), 3u);
  CHECK_EQ(kv.table(1, AttnKind::Sliding).size(), 3u);
  CHECK_EQ(kv.num_used(), 6);
  kv.allocate(1, 9, 3);  // positions 9..11 still fit in block 2
  CHECK_EQ(kv.table(1, AttnKind::Full).size(), 3u);
  kv.free(1);
  CHECK_EQ(kv.num_used(), 0);
  CHECK(kv.table(1, AttnKind::Full).empty());
}

TEST(sequences_never_share_a_block) {
  KvCacheManager kv = make_manager(12, 12);
  for (uint64_t seq = 1; seq <= 3; ++seq) kv.allocate(seq, 0, 15);
  std::set<int32_t> seen;
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    for (int32_t b : kv.table(seq, AttnKind::Full)) CHECK(seen.insert(b).second);
  }
  CHECK_EQ(seen.size(), 12u);
}

TEST(sliding_blocks_before_the_window_return_to_the_pool) {
  KvCacheManager kv = make_manager(20, 20);
  kv.allocate(1, 0, 16);  // blocks 0..3
  // A chunk starting at 16 reads back to 16 - 8 = 8: logical blocks 0 and 1 are no longer needed.
  kv.allocate(1, 16, 1);
  const std::vector<int32_t>& sliding = kv.table(1, AttnKind::Sliding);
  CHECK_EQ(sliding.size(), 5u);
  CHECK_EQ(sliding[0], -1);
  CHECK_EQ(sliding[1], -1);
  CHECK(sliding[2] >= 0);
  CHECK(sliding[4] >= 0);
  CHECK(std::count(kv.table(1, AttnKind::Full).begin(), kv.table(1, AttnKind::Full).end(), -1) == 0);
  CHECK_EQ(kv.num_used(), 5 + 3);
  kv.free(1);
  CHECK_EQ(kv.num_used(), 0);
}

TEST(max_allocatable_counts_blocks_the_window_would_release) {
  KvCacheManager kv = make_manager(100, 5);
  kv.allocate(1, 0, 20);  // all 5 sliding blocks
  CHECK_EQ(kv.max_allocatable(2, 0, 4), 0);  // another sequence gets nothing
  // Sequence 1 at position 20 keeps blocks from (20 - 8) / 4 = 3: blocks 0..2 go back.
  CHECK_EQ(kv.max_allocatable(1, 20, 100), 3 * kBlock);
  kv.allocate(1, 20, 12);
  CHECK_EQ(kv.table(1, AttnKind::Sliding).size(), 8u);
  CHECK_EQ(kv.max_allocatable(2, 0, 4), 0);
}

TEST(max_allocatable_is_limited_by_the_scarcer_pool) {
  KvCacheManager kv = make_manager(3, 50);
  CHECK_EQ(kv.max_allocatable(1, 0, 100), 12);
  kv.allocate(1, 0, 12);
  CHECK_EQ(kv.max_allocatable(1, 12, 1), 0);
  CHECK_EQ(kv.max_allocatable(2, 0, 1), 0);
}

TEST(peak_blocks_bounds_a_lone_sequence) {
  KvCacheManager kv = make_manager(100, 100);
  CHECK_EQ(kv.peak_blocks(AttnKind::Full, 40), 10);
  // Window of 8 plus the current token spans at most 3 blocks of 4, plus one for the boundary.
  CHECK_EQ(kv.peak_blocks(AttnKind::Sliding, 40), 4);
  CHECK_EQ(kv.peak_blocks(AttnKind::Sliding, 5), 2);
}

TEST(kind_without_layers_is_skipped) {
  const int32_t blocks[kNumAttnKinds] = {10, 0};
  const bool used[kNumAttnKinds] = {true, false};
  KvCacheManager kv(kBlock, blocks, used, 0, /*prefix_caching=*/false);
  CHECK_EQ(kv.max_allocatable(1, 0, 40), 40);
  kv.allocate(1, 0, 40);
  CHECK(kv.table(1, AttnKind::Sliding).empty());
  CHECK_EQ(kv.peak_blocks(AttnKind::Sliding, 100), 0);
  CHECK_EQ(kv.num_total(), 10);
}

TEST_MAIN()
