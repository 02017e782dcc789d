// Prefix caching: SHA-256 and the block hash chain, the reference-counted
// block pool with its LRU of cached blocks, the KV cache manager's lookup and
// sharing (both attention kinds), and the engine over TraceRunner (whose
// output changes if any position reads a wrong, shared-and-overwritten or
// released block): outputs equal the uncached reference under sharing,
// preemption, cancellation and exhaustion; salts isolate.
#include <atomic>
#include <set>
#include <string>
#include <thread>

#include "common/sha256.h"
#include "runtime/block_hash.h"
#include "runtime/block_pool.h"
#include "runtime/engine.h"
#include "runtime/kv_cache_manager.h"
#include "runtime/sampler.h"
#include "runtime_test_support.h"

using namespace gptoss;
using namespace gptoss::testing;

namespace {

std::string hex(const Sha256::Digest& d) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (uint8_t b : d) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

std::string sha256_hex(const std::string& text) { return hex(Sha256().update(text.data(), text.size()).finish()); }

std::vector<BlockHash> hashes_of(const std::vector<int32_t>& tokens, const std::string& salt, int32_t block_size) {
  std::vector<BlockHash> out;
  extend_block_hashes(out, salt_root(salt), tokens, static_cast<int32_t>(tokens.size()), block_size);
  return out;
}

std::vector<int32_t> iota_tokens(int32_t n, int32_t first = 0) {
  std::vector<int32_t> t(n);
  for (int32_t i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

constexpr int32_t kBlock = 4;
constexpr int32_t kWindow = 8;  // a query at p reads p - 8 .. p: logical blocks from (p - 8) / 4

KvCacheManager caching_manager(int32_t full_blocks, int32_t sliding_blocks, bool caching = true) {
  const int32_t blocks[kNumAttnKinds] = {full_blocks, sliding_blocks};
  const bool used[kNumAttnKinds] = {true, true};
  return KvCacheManager(kBlock, blocks, used, kWindow, caching);
}

// Computes `tokens` for `seq` in one chunk and publishes its full blocks, as the scheduler does.
void compute_and_publish(KvCacheManager& kv, uint64_t seq, const std::vector<BlockHash>& hashes, int32_t n) {
  kv.allocate(seq, 0, n);
  kv.cache_full_blocks(seq, hashes, n / kBlock);
}

}  // namespace

TEST(sha256_matches_the_fips_test_vectors) {
  CHECK_EQ(sha256_hex(""), std::string("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
  CHECK_EQ(sha256_hex("abc"), std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  CHECK_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
           std::string("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
  // Fed in pieces that straddle the 64-byte block boundary: the same digest.
  const std::string text(200, 'x');
  Sha256 pieces;
  pieces.update(text.data(), 63).update(text.data() + 63, 2).update(text.data() + 65, 135);
  CHECK_EQ(hex(pieces.finish()), sha256_hex(text));
}

TEST(block_hashes_chain_over_the_prefix_and_the_salt) {
  const std::vector<int32_t> a = iota_tokens(12);
  std::vector<int32_t> b = a;
  b[1] = 99;  // differs in block 0 only
  const std::vector<BlockHash> ha = hashes_of(a, "tenant-a", kBlock), hb = hashes_of(b, "tenant-a", kBlock);
  CHECK_EQ(ha.size(), 3u);
  CHECK(ha == hashes_of(a, "tenant-a", kBlock));
  // Block 2 has equal tokens in a and b, but a different prefix: a different hash.
  CHECK(!(ha[2] == hb[2]));
  // The same tokens under another salt share nothing.
  const std::vector<BlockHash> other = hashes_of(a, "tenant-b", kBlock);
  for (size_t i = 0; i < ha.size(); ++i) CHECK(!(ha[i] == other[i]));
  // Only full blocks are hashed, and extending is incremental.
  std::vector<BlockHash> partial;
  extend_block_hashes(partial, salt_root("tenant-a"), a, 7, kBlock);
  CHECK_EQ(partial.size(), 1u);
  extend_block_hashes(partial, salt_root("tenant-a"), a, 12, kBlock);
  CHECK(partial == ha);
}

TEST(block_pool_hands_out_uncached_blocks_first_and_evicts_least_recently_released) {
  BlockPool pool(4);
  const std::vector<BlockHash> h = hashes_of(iota_tokens(8), "", kBlock);
  const int32_t a = pool.take(), b = pool.take(), c = pool.take();
  CHECK_EQ(a, 0);
  CHECK_EQ(c, 2);
  pool.publish(a, h[0]);
  pool.publish(b, h[1]);
  pool.release(a);  // cached: queued at the back
  pool.release(b);
  pool.release(c);  // uncached: reused first
  CHECK_EQ(pool.num_free(), 4);
  CHECK_EQ(pool.num_cached(), 2);
  CHECK_EQ(pool.take(), c);
  CHECK_EQ(pool.take(), 3);
  // Only cached blocks are left: the least recently released goes first, and is forgotten.
  CHECK_EQ(pool.take(), a);
  CHECK_EQ(pool.num_evictions(), 1u);
  CHECK_EQ(pool.find(h[0]), -1);
  CHECK_EQ(pool.find(h[1]), b);
  // A hit takes a free cached block off the free list.
  pool.share(b);
  CHECK_EQ(pool.num_free(), 0);
  CHECK_EQ(pool.ref_count(b), 1);
}

TEST(block_pool_keeps_the_first_block_published_under_a_hash) {
  BlockPool pool(3);
  const BlockHash h = hashes_of(iota_tokens(4), "", kBlock)[0];
  const int32_t first = pool.take(), twin = pool.take();
  pool.publish(first, h);
  pool.publish(twin, h);  // computed concurrently: stays private
  CHECK_EQ(pool.find(h), first);
  CHECK_EQ(pool.num_cached(), 1);
  pool.release(twin);
  pool.release(first);
  CHECK_EQ(pool.take(), twin);  // uncached first
  CHECK_EQ(pool.take(), 2);
  CHECK_EQ(pool.num_evictions(), 0u);
}

TEST(a_second_sequence_shares_the_cached_blocks_of_both_kinds) {
  KvCacheManager kv = caching_manager(20, 20);
  const std::vector<int32_t> prompt = iota_tokens(22);  // 5 full blocks and 2 tokens
  const std::vector<BlockHash> h = hashes_of(prompt, "t", kBlock);
  compute_and_publish(kv, 1, h, 22);
  CHECK_EQ(kv.num_cached(), 10);
  kv.free(1);
  CHECK_EQ(kv.num_used(), 0);
  CHECK_EQ(kv.cached_prefix_blocks(h, 5), 5);
  CHECK_EQ(kv.cached_prefix_blocks(h, 3), 3);
  kv.attach_cached_prefix(2, h, 5);
  const std::vector<int32_t>& full = kv.table(2, AttnKind::Full);
  const std::vector<int32_t>& sliding = kv.table(2, AttnKind::Sliding);
  CHECK_EQ(full.size(), 5u);
  // Position 20 reads from 12: logical sliding blocks 3 and 4 are kept, 0..2 are not.
  CHECK_EQ(sliding.size(), 5u);
  CHECK_EQ(sliding[2], -1);
  CHECK(sliding[3] >= 0 && sliding[4] >= 0);
  CHECK_EQ(kv.num_used(), 5 + 2);
  // A third sequence shares the same physical blocks.
  kv.attach_cached_prefix(3, h, 5);
  CHECK(kv.table(3, AttnKind::Full) == full);
  CHECK_EQ(kv.num_used(), 5 + 2);
  // Both go on computing from position 20 into blocks of their own.
  kv.allocate(2, 20, 3);
  kv.allocate(3, 20, 3);
  CHECK(kv.table(2, AttnKind::Full)[5] != kv.table(3, AttnKind::Full)[5]);
  kv.free(2);
  kv.free(3);
  CHECK_EQ(kv.num_used(), 0);
}

TEST(an_evicted_sliding_block_shortens_the_hit_to_what_survives) {
  // Sliding pool of 6: a 24-token prompt needs all 6 at once.
  KvCacheManager kv = caching_manager(40, 6);
  const std::vector<BlockHash> h = hashes_of(iota_tokens(24), "t", kBlock);
  compute_and_publish(kv, 1, h, 24);
  kv.free(1);  // last block first: sliding block 5 is evicted first
  CHECK_EQ(kv.cached_prefix_blocks(h, 6), 6);
  kv.allocate(2, 0, 4);  // takes one free block: every one is cached, so block 5's goes
  CHECK_EQ(kv.num_evictions(), 1u);
  // A 6-block hit needs sliding blocks 4 and 5; a 5-block hit needs 3 and 4.
  CHECK_EQ(kv.cached_prefix_blocks(h, 6), 5);
  kv.free(2);
  // A different salt finds nothing.
  CHECK_EQ(kv.cached_prefix_blocks(hashes_of(iota_tokens(24), "u", kBlock), 6), 0);
}

TEST(caching_off_never_finds_or_keeps_anything) {
  KvCacheManager kv = caching_manager(20, 20, /*caching=*/false);
  const std::vector<BlockHash> h = hashes_of(iota_tokens(16), "t", kBlock);
  compute_and_publish(kv, 1, h, 16);
  kv.free(1);
  CHECK_EQ(kv.num_cached(), 0);
  CHECK_EQ(kv.cached_prefix_blocks(h, 4), 0);
}

TEST(max_allocatable_counts_no_space_from_releasing_a_shared_sliding_block) {
  KvCacheManager kv = caching_manager(40, 4);
  const std::vector<BlockHash> h = hashes_of(iota_tokens(12), "t", kBlock);
  compute_and_publish(kv, 1, h, 12);  // sliding blocks 0..2
  kv.attach_cached_prefix(2, h, 3);   // shares sliding blocks 1 and 2 (position 12 reads from 4)
  // Sequence 1 at position 12 releases block 0 (it reads from 4): with the
  // one free block, two blocks' worth.
  CHECK_EQ(kv.max_allocatable(1, 12, 100), 2 * kBlock);
  kv.allocate(1, 12, 4);
  // At 16 it would release block 1, but that one is still sequence 2's: only
  // the one free block counts.
  CHECK_EQ(kv.max_allocatable(1, 16, 100), kBlock);
}

// ---- the engine over TraceRunner --------------------------------------------

namespace {

constexpr int32_t kVocab = TraceRunner::kVocab;

EngineOptions options(bool caching) {
  EngineOptions o;
  o.max_num_seqs = 6;
  o.max_model_len = 256;
  o.max_batched_tokens = 16;
  o.block_size = kBlock;
  o.enable_prefix_caching = caching;
  return o;
}

Request request(std::vector<int32_t> prompt, int32_t max_tokens, const std::string& salt) {
  Request r;
  r.prompt = std::move(prompt);
  r.sampling.max_tokens = max_tokens;
  r.cache_salt = salt;
  return r;
}

// A shared "system prompt" of `shared` tokens, then a turn of its own.
std::vector<int32_t> conversation(int32_t shared, int32_t turn, int32_t which) {
  std::vector<int32_t> p;
  for (int32_t i = 0; i < shared; ++i) p.push_back((i * 5 + 3) % kVocab);
  for (int32_t i = 0; i < turn; ++i) p.push_back((i * 11 + which * 17 + 1) % kVocab);
  return p;
}

// Runs `r` to the end; returns its events.
std::vector<gptoss_event> run(Harness& h, const Request& r) { return h.events.wait_finished(h.engine->submit(r)); }

}  // namespace

TEST(a_repeated_prefix_is_computed_once_and_reported_as_cached) {
  Harness h(options(true));
  const Request cold = request(conversation(40, 6, 1), 5, "tenant-a");
  const std::vector<gptoss_event> first = run(h, cold);
  CHECK(tokens_of(first) == reference_output(cold));
  CHECK_EQ(first.back().cached_tokens, 0);
  const uint64_t processed = h.engine->stats().prompt_tokens_processed;
  CHECK_EQ(processed, 46u);

  const Request warm = request(conversation(40, 6, 2), 5, "tenant-a");
  const std::vector<gptoss_event> second = run(h, warm);
  CHECK(tokens_of(second) == reference_output(warm));
  for (const gptoss_event& e : second) CHECK_EQ(e.cached_tokens, 40);  // 10 whole blocks
  const gptoss_stats s = h.engine->stats();
  CHECK_EQ(s.prompt_tokens_processed - processed, 6u);
  CHECK_EQ(s.prefix_cache_queried_tokens, 92u);
  CHECK_EQ(s.prefix_cache_hit_tokens, 40u);
  CHECK(s.prefix_cache_blocks > 0);
  CHECK_EQ(s.kv_blocks_used, 0);

  // The whole prompt cached: its last token is computed again for its logits.
  const std::vector<gptoss_event> again = run(h, cold);
  CHECK(tokens_of(again) == reference_output(cold));
  CHECK_EQ(again.back().cached_tokens, 44);
}

TEST(another_salt_never_hits) {
  Harness h(options(true));
  run(h, request(conversation(40, 6, 1), 3, "tenant-a"));
  const Request other = request(conversation(40, 6, 1), 3, "tenant-b");
  const std::vector<gptoss_event> ev = run(h, other);
  CHECK(tokens_of(ev) == reference_output(other));
  CHECK_EQ(ev.back().cached_tokens, 0);
  CHECK_EQ(h.engine->stats().prefix_cache_hit_tokens, 0u);
}

TEST(caching_off_recomputes_every_prompt) {
  Harness h(options(false));
  run(h, request(conversation(40, 6, 1), 3, "t"));
  const std::vector<gptoss_event> ev = run(h, request(conversation(40, 6, 2), 3, "t"));
  CHECK_EQ(ev.back().cached_tokens, 0);
  const gptoss_stats s = h.engine->stats();
  CHECK_EQ(s.prompt_tokens_processed, 92u);
  CHECK_EQ(s.prefix_cache_blocks, 0);
  CHECK_EQ(s.prefix_cache_hit_tokens, 0u);
}

TEST(concurrent_conversations_sharing_blocks_each_get_the_reference_output) {
  Harness h(options(true));
  run(h, request(conversation(37, 3, 0), 2, "t"));  // warms the shared prefix
  std::vector<Request> reqs;
  std::vector<uint64_t> ids;
  for (int32_t i = 1; i <= 6; ++i) {
    reqs.push_back(request(conversation(37, 2 + i, i), 8 + i, "t"));
    ids.push_back(h.engine->submit(reqs.back()));
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    const std::vector<gptoss_event> ev = h.events.wait_finished(ids[i]);
    CHECK(tokens_of(ev) == reference_output(reqs[i]));
    CHECK_EQ(ev.back().cached_tokens, 36);
  }
  CHECK_EQ(h.engine->stats().kv_blocks_used, 0);
}

TEST(preemption_and_exhaustion_with_shared_blocks_keep_every_output_right) {
  EngineOptions o = options(true);
  o.kv_cache_bytes = 256 * 40;  // TraceRunner blocks are 256 bytes: far fewer than 8 sequences want
  Harness h(o);
  CHECK(h.engine->stats().kv_blocks_total <= 40);
  std::vector<Request> reqs;
  for (int32_t i = 0; i < 8; ++i) {
    Request r = request(conversation(24, 4 + i, i % 3), 16, i % 2 ? "a" : "b");
    r.sampling.temperature = i % 3 ? 0.8f : 0.0f;
    r.sampling.seed = i;
    reqs.push_back(r);
  }
  check_outputs_together(h, reqs);
  const gptoss_stats s = h.engine->stats();
  CHECK_EQ(s.kv_blocks_used, 0);
  CHECK(s.prefix_cache_evictions > 0);
}

TEST(cancelling_one_sharer_leaves_the_others_and_the_cache_intact) {
  Harness h(options(true));
  run(h, request(conversation(32, 2, 0), 2, "t"));
  const Request keep = request(conversation(32, 5, 1), 40, "t");
  // Cancel from inside the step loop, on the fourth step after both are
  // submitted: both sharers are decoding then, and neither can have finished
  // (a cancel from this thread could come after all 200 tokens on a busy host).
  std::atomic<uint64_t> cancelled{0};
  std::atomic<bool> submitted{false};
  int32_t steps = 0;
  h.runner->before_forward = [&](const BatchPlan&) {
    while (!submitted) std::this_thread::yield();
    if (++steps == 4) CHECK(h.engine->cancel(cancelled));
  };
  cancelled = h.engine->submit(request(conversation(32, 5, 2), 200, "t"));
  const uint64_t kept = h.engine->submit(keep);
  submitted = true;
  CHECK_EQ(h.events.wait_finished(cancelled).back().finish, GPTOSS_FINISH_CANCELLED);
  CHECK(tokens_of(h.events.wait_finished(kept)) == reference_output(keep));
  h.runner->before_forward = nullptr;
  const std::vector<gptoss_event> later = run(h, request(conversation(32, 5, 3), 3, "t"));
  CHECK_EQ(later.back().cached_tokens, 32);
  CHECK_EQ(h.engine->stats().kv_blocks_used, 0);
}

TEST(a_row_computed_again_for_a_late_mask_rewrites_a_shared_block_with_the_same_kv) {
  Harness h(options(true));
  // 36 prompt tokens: the last one completes block 8, published when first computed. The
  // constrained request's row is computed again, block 8 rewritten, in every step it waits.
  Request constrained = request(conversation(32, 4, 1), 3, "t");
  constrained.sampling.constrained = true;
  // Its prompt takes 3 steps of 16 tokens. A request submitted once the third forward has begun
  // joins the step after it, when block 8 is published.
  std::atomic<int> forwards{0};
  h.runner->before_forward = [&](const BatchPlan&) { ++forwards; };
  const uint64_t c = h.engine->submit(constrained);
  for (int i = 0; i < 5000 && forwards.load() < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK_EQ(forwards.load(), 3);
  // The same 36 tokens and four more: blocks 0-8 come from the cache, block 8 read while rewritten.
  std::vector<int32_t> longer = constrained.prompt;
  for (int32_t t : {7, 8, 9, 10}) longer.push_back(t);
  const Request free = request(longer, 12, "t");
  const std::vector<gptoss_event> ev = run(h, free);
  CHECK(tokens_of(ev) == reference_output(free));
  CHECK_EQ(ev.back().cached_tokens, 36);
  CHECK(h.engine->stats().token_mask_deferrals > 0);
  feed_masks(h, c, 3);
  CHECK(tokens_of(h.events.wait_finished(c)) == constrained_reference(constrained.prompt, 3));
  CHECK_EQ(h.engine->stats().kv_blocks_used, 0);
}

TEST_MAIN()
