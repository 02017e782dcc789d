#include "runtime/scheduler.h"

#include <algorithm>

namespace gptoss {

Scheduler::Scheduler(const SchedulerLimits& limits, KvCacheManager& kv, std::unique_ptr<RequestQueue> queue)
    : limits_(limits), kv_(kv), queue_(std::move(queue)) {}

bool Scheduler::fits_alone(int32_t positions) const {
  for (AttnKind kind : {AttnKind::Full, AttnKind::Sliding}) {
    if (kv_.peak_blocks(kind, positions) > kv_.total_blocks(kind)) return false;
  }
  return true;
}

void Scheduler::add(std::unique_ptr<Sequence> seq) {
  Sequence* raw = seq.get();
  seqs_.emplace(raw->id, std::move(seq));
  queue_->push(raw);
}

std::unique_ptr<Sequence> Scheduler::remove(uint64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return nullptr;
  std::unique_ptr<Sequence> seq = std::move(it->second);
  seqs_.erase(it);
  if (!queue_->remove(seq.get())) {
    running_.erase(std::find(running_.begin(), running_.end(), seq.get()));
    kv_.free(id);
  }
  return seq;
}

std::vector<uint64_t> Scheduler::ids() const {
  std::vector<uint64_t> out;
  out.reserve(seqs_.size());
  for (const auto& entry : seqs_) out.push_back(entry.first);
  std::sort(out.begin(), out.end());
  return out;
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  int32_t budget = limits_.max_batched_tokens;
  std::vector<Sequence*> scheduled;

  std::vector<Sequence*> order;
  for (Sequence* seq : running_) if (seq->num_pending() == 1) order.push_back(seq);
  for (Sequence* seq : running_) if (seq->num_pending() > 1) order.push_back(seq);

  for (Sequence* seq : order) {
    if (budget == 0) break;
    if (std::find(running_.begin(), running_.end(), seq) == running_.end()) continue;  // preempted
    const int32_t want = std::min(seq->num_pending(), budget);
    int32_t n = kv_.max_allocatable(seq->id, seq->num_computed, want);
    while (n == 0) {
      ++plan.num_preempted;
      if (preempt_youngest(scheduled) == seq) break;
      n = kv_.max_allocatable(seq->id, seq->num_computed, want);
    }
    if (n == 0) continue;
    add_chunk(plan, seq, n);
    scheduled.push_back(seq);
    budget -= n;
  }

  // Admitting while others were just preempted would only preempt again.
  while (plan.num_preempted == 0 && budget > 0 && num_running() < limits_.max_num_seqs) {
    Sequence* seq = queue_->peek();
    if (seq == nullptr) break;
    attach_cached_prefix(seq);
    const int32_t n = kv_.max_allocatable(seq->id, seq->num_computed, std::min(seq->num_pending(), budget));
    if (n == 0) {
      kv_.free(seq->id);  // the cached blocks stay cached for its next try
      seq->num_computed = 0;
      break;
    }
    queue_->pop();
    running_.push_back(seq);
    if (seq->num_cached_prompt_tokens < 0) {
      seq->num_cached_prompt_tokens = std::min(seq->num_computed, seq->num_prompt_tokens);
      prefix_counters_.queried_tokens += static_cast<uint64_t>(seq->num_prompt_tokens);
      prefix_counters_.hit_tokens += static_cast<uint64_t>(seq->num_cached_prompt_tokens);
    }
    add_chunk(plan, seq, n);
    budget -= n;
  }

  fill_block_tables(plan);
  return plan;
}

void Scheduler::attach_cached_prefix(Sequence* seq) {
  if (!kv_.prefix_caching()) return;
  const int32_t block_size = kv_.block_size();
  seq->hash_blocks(seq->length(), block_size);
  // At least the last token is computed again: its logits give the next token.
  const int32_t blocks = kv_.cached_prefix_blocks(seq->block_hashes, (seq->length() - 1) / block_size);
  if (blocks > 0) kv_.attach_cached_prefix(seq->id, seq->block_hashes, blocks);
  seq->num_computed = blocks * block_size;
}

void Scheduler::add_chunk(StepPlan& plan, Sequence* seq, int32_t n) {
  kv_.allocate(seq->id, seq->num_computed, n);
  ChunkPlan chunk;
  chunk.token_offset = static_cast<int32_t>(plan.batch.tokens.size());
  chunk.n_tokens = n;
  chunk.start_pos = seq->num_computed;
  chunk.want_logits = seq->num_computed + n == seq->length();
  plan.batch.tokens.insert(plan.batch.tokens.end(), seq->tokens.begin() + seq->num_computed,
                           seq->tokens.begin() + seq->num_computed + n);
  plan.batch.chunks.push_back(chunk);
  plan.chunk_seqs.push_back(seq);
  if (chunk.want_logits) plan.sampled_seqs.push_back(seq);
}

// Tables are read only once every allocation of the step is done: a later
// allocation may grow a table's storage.
void Scheduler::fill_block_tables(StepPlan& plan) const {
  for (size_t i = 0; i < plan.batch.chunks.size(); ++i) {
    ChunkPlan& chunk = plan.batch.chunks[i];
    for (int k = 0; k < kNumAttnKinds; ++k) {
      const std::vector<int32_t>& table = kv_.table(plan.chunk_seqs[i]->id, static_cast<AttnKind>(k));
      chunk.block_table[k] = table.empty() ? nullptr : table.data();
      chunk.n_blocks[k] = static_cast<int32_t>(table.size());
    }
  }
}

Sequence* Scheduler::preempt_youngest(const std::vector<Sequence*>& scheduled) {
  for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
    Sequence* victim = *it;
    if (std::find(scheduled.begin(), scheduled.end(), victim) != scheduled.end()) continue;
    running_.erase(std::next(it).base());
    kv_.free(victim->id);
    victim->num_computed = 0;
    queue_->push_front(victim);
    return victim;
  }
  return nullptr;  // unreachable: the sequence asking is itself unscheduled and running
}

void Scheduler::commit(const StepPlan& plan) {
  for (size_t i = 0; i < plan.batch.chunks.size(); ++i) {
    Sequence* seq = plan.chunk_seqs[i];
    seq->num_computed += plan.batch.chunks[i].n_tokens;
    if (kv_.prefix_caching()) {
      seq->hash_blocks(seq->num_computed, kv_.block_size());
      kv_.cache_full_blocks(seq->id, seq->block_hashes, seq->num_computed / kv_.block_size());
    }
  }
}

}  // namespace gptoss
