// Scheduler: continuous batching. Each step it picks which sequences run and
// how many of their tokens, under a token budget (chunked prefill) and the
// free KV blocks, and emits the plan for the model runner. It knows sequences
// and blocks, never kernels; sampling and finishing belong to the engine.
//
// Order within a step: running sequences that decode (one pending token)
// first, then running sequences in the middle of their prompt, then newly
// admitted ones from the waiting queue. When blocks run out, the youngest
// running sequence not yet scheduled this step is preempted: its blocks are
// freed and it goes back to the front of the queue to recompute its prompt and
// generated tokens later (sampling is counter-seeded, so its output does not
// change).
//
// With prefix caching, a sequence being admitted first takes the longest
// prefix of its blocks the KV cache holds (its own, after a preemption) and
// computes only the rest; every step publishes the blocks it completed.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "runtime/batch.h"
#include "runtime/kv_cache_manager.h"
#include "runtime/request_queue.h"
#include "runtime/sequence.h"

namespace gptoss {

struct SchedulerLimits {
  int32_t max_num_seqs = 1;
  int32_t max_batched_tokens = 1;
};

struct StepPlan {
  BatchPlan batch;
  std::vector<Sequence*> chunk_seqs;    // the sequence of each batch.chunks[i]
  std::vector<Sequence*> sampled_seqs;  // the sequence of each logits row
  int32_t num_preempted = 0;
  bool empty() const { return batch.chunks.empty(); }
};

// Prompt tokens looked up in the prefix cache at each request's first
// admission, and how many of them were found.
struct PrefixCacheCounters {
  uint64_t queried_tokens = 0;
  uint64_t hit_tokens = 0;
};

class Scheduler {
 public:
  Scheduler(const SchedulerLimits& limits, KvCacheManager& kv, std::unique_ptr<RequestQueue> queue);

  // Whether a sequence that computes `positions` positions could run alone in
  // an empty cache; one that cannot would wait forever.
  bool fits_alone(int32_t positions) const;

  void add(std::unique_ptr<Sequence> seq);
  // Takes a waiting or running sequence out, freeing its blocks; nullptr when unknown.
  std::unique_ptr<Sequence> remove(uint64_t id);
  // Ids of every sequence held, waiting or running.
  std::vector<uint64_t> ids() const;

  StepPlan schedule();
  // Records that the runner computed every chunk of `plan`.
  void commit(const StepPlan& plan);
  // A committed sequence whose sampled token was not used (its token mask came
  // late): its last position is computed again in a later step, for the
  // logits of the same position. Its K/V there are written again, the same
  // token at the same position; blocks published meanwhile stay published.
  void compute_last_again(Sequence& seq) { --seq.num_computed; }

  bool has_work() const { return !running_.empty() || queue_->size() > 0; }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(queue_->size()); }
  const KvCacheManager& kv() const { return kv_; }
  const PrefixCacheCounters& prefix_cache_counters() const { return prefix_counters_; }

 private:
  // Gives a waiting sequence the cached blocks of its longest cached prefix
  // and marks those positions computed.
  void attach_cached_prefix(Sequence* seq);
  // Sets up the chunk of `n` tokens of `seq` that starts at its first pending token.
  void add_chunk(StepPlan& plan, Sequence* seq, int32_t n);
  // Frees the youngest running sequence not in `scheduled` and requeues it.
  Sequence* preempt_youngest(const std::vector<Sequence*>& scheduled);
  void fill_block_tables(StepPlan& plan) const;

  const SchedulerLimits limits_;
  KvCacheManager& kv_;
  std::unique_ptr<RequestQueue> queue_;
  std::vector<Sequence*> running_;  // in admission order, oldest first
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> seqs_;
  PrefixCacheCounters prefix_counters_;
};

}  // namespace gptoss
