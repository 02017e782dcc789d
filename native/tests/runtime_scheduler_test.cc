// Scheduler: chunked prefill under the token budget, decodes first,
// admission limits, preemption of the youngest sequence, fairness, prefix-cache
// hits at admission.
#include "runtime/scheduler.h"

#include <memory>

#include "runtime_test_support.h"

using namespace gptoss;

namespace {

constexpr int32_t kBlock = 4;

struct Fixture {
  Fixture(int32_t full_blocks, int32_t max_num_seqs, int32_t max_batched_tokens, int32_t sliding_blocks = 1000,
          bool prefix_caching = false)
      : kv(make_kv(full_blocks, sliding_blocks, prefix_caching)),
        scheduler(SchedulerLimits{max_num_seqs, max_batched_tokens}, kv, std::make_unique<FairRequestQueue>()) {}

  static KvCacheManager make_kv(int32_t full_blocks, int32_t sliding_blocks, bool prefix_caching) {
    const int32_t blocks[kNumAttnKinds] = {full_blocks, sliding_blocks};
    const bool used[kNumAttnKinds] = {true, true};
    return KvCacheManager(kBlock, blocks, used, 8, prefix_caching);
  }

  Sequence* add(uint64_t id, int32_t prompt_len, const std::string& key = "", int32_t token = 7) {
    Request r;
    r.prompt.assign(prompt_len, token);
    r.fairness_key = key;
    auto seq = std::make_unique<Sequence>(id, std::move(r));
    Sequence* raw = seq.get();
    scheduler.add(std::move(seq));
    return raw;
  }

  // Schedules, pretends the runner ran, and appends a token to every sampled sequence.
  StepPlan step() {
    StepPlan plan = scheduler.schedule();
    scheduler.commit(plan);
    for (Sequence* seq : plan.sampled_seqs) seq->append(1);
    return plan;
  }

  KvCacheManager kv;
  Scheduler scheduler;
};

std::vector<uint64_t> ids_of(const StepPlan& plan) {
  std::vector<uint64_t> ids;
  for (const Sequence* s : plan.chunk_seqs) ids.push_back(s->id);
  return ids;
}

}  // namespace

TEST(long_prompt_is_prefilled_in_chunks_under_the_budget) {
  Fixture f(100, 4, 8);
  Sequence* seq = f.add(1, 20);
  StepPlan p1 = f.step();
  CHECK_EQ(p1.batch.chunks.size(), 1u);
  CHECK_EQ(p1.batch.chunks[0].n_tokens, 8);
  CHECK_EQ(p1.batch.chunks[0].start_pos, 0);
  CHECK(!p1.batch.chunks[0].want_logits);
  CHECK(p1.sampled_seqs.empty());
  StepPlan p2 = f.step();
  CHECK_EQ(p2.batch.chunks[0].start_pos, 8);
  StepPlan p3 = f.step();
  CHECK_EQ(p3.batch.chunks[0].n_tokens, 4);
  CHECK(p3.batch.chunks[0].want_logits);
  CHECK_EQ(seq->length(), 21);
  StepPlan p4 = f.step();  // decode: the sampled token
  CHECK_EQ(p4.batch.chunks[0].n_tokens, 1);
  CHECK_EQ(p4.batch.chunks[0].start_pos, 20);
  CHECK_EQ(p4.batch.tokens[0], 1);
}

TEST(decodes_go_before_prefill_chunks) {
  Fixture f(100, 4, 6);
  f.add(1, 3);
  f.step();           // 1 prefilled, now decoding
  f.add(2, 10);
  StepPlan p = f.step();
  CHECK(ids_of(p) == (std::vector<uint64_t>{1, 2}));
  CHECK_EQ(p.batch.chunks[0].n_tokens, 1);
  CHECK_EQ(p.batch.chunks[1].n_tokens, 5);
  CHECK_EQ(p.batch.chunks[1].token_offset, 1);
  CHECK_EQ(p.batch.tokens.size(), 6u);
  // Sequence 2 is now mid-prompt; sequence 1 decodes first again.
  StepPlan q = f.step();
  CHECK(ids_of(q) == (std::vector<uint64_t>{1, 2}));
}

TEST(admission_stops_at_max_num_seqs) {
  Fixture f(100, 2, 100);
  f.add(1, 3);
  f.add(2, 3);
  f.add(3, 3);
  StepPlan p = f.step();
  CHECK(ids_of(p) == (std::vector<uint64_t>{1, 2}));
  CHECK_EQ(f.scheduler.num_running(), 2);
  CHECK_EQ(f.scheduler.num_waiting(), 1);
}

TEST(block_tables_describe_each_chunk) {
  Fixture f(100, 4, 100);
  f.add(1, 9);
  f.add(2, 5);
  StepPlan p = f.step();
  const ChunkPlan& c1 = p.batch.chunks[0];
  const ChunkPlan& c2 = p.batch.chunks[1];
  CHECK_EQ(c1.n_blocks[0], 3);
  CHECK_EQ(c2.n_blocks[0], 2);
  CHECK(c1.block_table[0] == f.kv.table(1, AttnKind::Full).data());
  CHECK(c2.block_table[1] == f.kv.table(2, AttnKind::Sliding).data());
}

TEST(waiting_sequences_are_admitted_fairly_across_keys) {
  Fixture f(100, 1, 100);
  for (uint64_t id = 1; id <= 4; ++id) f.add(id, 2, "flood");
  f.add(5, 2, "quiet");
  std::vector<uint64_t> admitted;
  for (int i = 0; i < 5; ++i) {
    StepPlan p = f.scheduler.schedule();
    f.scheduler.commit(p);
    admitted.push_back(p.chunk_seqs[0]->id);
    f.scheduler.remove(p.chunk_seqs[0]->id);  // finishes at once
  }
  CHECK(admitted == (std::vector<uint64_t>{1, 5, 2, 3, 4}));
}

TEST(out_of_blocks_preempts_the_youngest_and_requeues_it) {
  // 4 full blocks of 4 tokens: two sequences of 8 tokens fill them.
  Fixture f(4, 4, 100);
  Sequence* old_seq = f.add(1, 8);
  Sequence* young = f.add(2, 8);
  f.step();
  CHECK_EQ(f.kv.num_used() >= 4, true);
  // Both now need a fifth block for position 8: the older one gets it.
  StepPlan p = f.step();
  CHECK_EQ(p.num_preempted, 1);
  CHECK(ids_of(p) == (std::vector<uint64_t>{1}));
  CHECK_EQ(young->num_computed, 0);
  CHECK_EQ(young->length(), 9);  // keeps its generated token, recomputed later
  CHECK_EQ(f.scheduler.num_running(), 1);
  CHECK_EQ(f.scheduler.num_waiting(), 1);
  CHECK_EQ(old_seq->num_computed, 9);
  // When the old one finishes, the young one recomputes prompt + generated token.
  f.scheduler.remove(1);
  StepPlan r = f.step();
  CHECK(ids_of(r) == (std::vector<uint64_t>{2}));
  CHECK_EQ(r.batch.chunks[0].n_tokens, 9);
  CHECK(r.batch.chunks[0].want_logits);
}

TEST(sequence_preempts_itself_when_it_is_the_youngest) {
  Fixture f(4, 4, 100);
  f.add(1, 8);
  f.add(2, 8);
  f.step();
  f.scheduler.remove(1);
  Sequence* third = f.add(3, 7);
  // 2 decodes at position 8 and takes a third block; 3 gets the last free block
  // for the first 4 of its 7 prompt tokens.
  StepPlan p = f.step();
  CHECK(ids_of(p) == (std::vector<uint64_t>{2, 3}));
  CHECK_EQ(p.batch.chunks[1].n_tokens, 4);
  // 3 needs another block for the rest of its prompt; it is the youngest
  // sequence not yet scheduled, so it steps back itself.
  StepPlan q = f.step();
  CHECK(ids_of(q) == (std::vector<uint64_t>{2}));
  CHECK_EQ(q.num_preempted, 1);
  CHECK_EQ(third->num_computed, 0);
  CHECK_EQ(f.scheduler.num_waiting(), 1);
}

TEST(fits_alone_checks_the_whole_cache) {
  Fixture f(4, 4, 100);
  CHECK(f.scheduler.fits_alone(16));
  CHECK(!f.scheduler.fits_alone(17));
  Fixture g(100, 4, 100, 3);  // window 8 + 1 over blocks of 4 needs 4 sliding blocks
  CHECK(!g.scheduler.fits_alone(40));
  CHECK(g.scheduler.fits_alone(12));
}

TEST(remove_frees_blocks_of_running_and_waiting_sequences) {
  Fixture f(100, 1, 100);
  f.add(1, 10);
  f.add(2, 10);
  f.step();
  CHECK(f.kv.num_used() > 0);
  CHECK(f.scheduler.remove(2) != nullptr);
  CHECK(f.scheduler.remove(1) != nullptr);
  CHECK(f.scheduler.remove(1) == nullptr);
  CHECK_EQ(f.kv.num_used(), 0);
  CHECK(!f.scheduler.has_work());
}

TEST(a_cached_prefix_is_taken_at_admission_and_given_back_when_the_rest_does_not_fit) {
  Fixture f(5, 4, 64, 1000, /*prefix_caching=*/true);  // 5 full blocks of 4 tokens
  f.add(1, 12);
  f.step();  // prefilled: blocks 0..2 published
  f.scheduler.remove(1);
  CHECK_EQ(f.kv.num_used(), 0);
  f.add(3, 7, "", /*token=*/9);  // takes the 2 never-cached blocks and keeps decoding in them
  f.step();
  Sequence* seq = f.add(2, 16);  // shares sequence 1's 12 tokens, then needs one more block
  StepPlan blocked = f.step();
  CHECK(ids_of(blocked) == std::vector<uint64_t>{3});
  CHECK_EQ(seq->num_computed, 0);
  CHECK_EQ(f.kv.num_used(), 2 + 2);  // sequence 3's of each kind: the shared ones went back, still cached
  CHECK_EQ(f.kv.cached_prefix_blocks(seq->block_hashes, 3), 3);
  f.scheduler.remove(3);
  StepPlan admitted = f.step();
  CHECK_EQ(admitted.batch.chunks.size(), 1u);
  CHECK_EQ(admitted.batch.chunks[0].start_pos, 12);
  CHECK_EQ(admitted.batch.chunks[0].n_tokens, 4);
  CHECK_EQ(seq->num_cached_prompt_tokens, 12);
  CHECK_EQ(f.scheduler.prefix_cache_counters().queried_tokens, 12u + 7u + 16u);
  CHECK_EQ(f.scheduler.prefix_cache_counters().hit_tokens, 12u);
}

TEST_MAIN()
