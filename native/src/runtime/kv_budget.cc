#include "runtime/kv_budget.h"

#include <algorithm>
#include <cstdint>

namespace gptoss {

KvCacheShape plan_kv_cache(const ModelRunner& runner, uint64_t budget_bytes, const KvDemand& d) {
  constexpr int kFull = static_cast<int>(AttnKind::Full);
  constexpr int kSliding = static_cast<int>(AttnKind::Sliding);
  const ModelConfig& cfg = runner.config();
  auto blocks_for = [&](int64_t positions) { return (positions + d.block_size - 1) / d.block_size; };

  uint64_t block_bytes[kNumAttnKinds];
  for (int k = 0; k < kNumAttnKinds; ++k) {
    const AttnKind kind = static_cast<AttnKind>(k);
    block_bytes[k] = cfg.num_layers_of(kind) > 0 ? runner.kv_block_bytes(kind, d.block_size) : 0;
  }
  const int64_t per_seq_full = blocks_for(d.max_model_len);
  const int64_t per_seq_sliding = std::min(per_seq_full, blocks_for(int64_t{cfg.sliding_window} + 1) + 1);
  const int64_t step_chunk = blocks_for(d.max_batched_tokens);
  int64_t want[kNumAttnKinds];
  want[kFull] = block_bytes[kFull] ? d.max_num_seqs * per_seq_full : 0;
  want[kSliding] =
      block_bytes[kSliding] ? std::min(d.max_num_seqs * per_seq_full, d.max_num_seqs * per_seq_sliding + step_chunk) : 0;
  const uint64_t want_bytes = block_bytes[kFull] * want[kFull] + block_bytes[kSliding] * want[kSliding];

  KvCacheShape shape;
  shape.block_size = d.block_size;
  if (budget_bytes == 0 || budget_bytes >= want_bytes) {
    // Call 29 (gpu-stack with one sequence at most) kept a 4 096-token pool
    // and 57 GB idle, and a 2 048-token cached prefix lost blocks to the
    // next requests.
    const uint64_t pair_bytes = block_bytes[kFull] + block_bytes[kSliding];
    const int64_t surplus = budget_bytes > want_bytes && pair_bytes > 0
        ? static_cast<int64_t>((budget_bytes - want_bytes) / pair_bytes) : 0;
    for (int k = 0; k < kNumAttnKinds; ++k) {
      const int64_t blocks = want[k] + (block_bytes[k] ? surplus : 0);
      shape.num_blocks[k] = static_cast<int32_t>(std::min<int64_t>(blocks, INT32_MAX));
    }
    return shape;
  }
  // Short of the maximum: the sliding pool is small, and below one sequence's
  // window plus one step's chunk it would stall every long sequence, so it
  // gets at least that much; the full pool takes what is left.
  const double share = double(budget_bytes) / double(want_bytes);
  const int64_t sliding = block_bytes[kSliding] == 0 ? 0
      : std::max<int64_t>(static_cast<int64_t>(want[kSliding] * share),
                          std::min(want[kSliding], per_seq_sliding + step_chunk));
  const uint64_t sliding_bytes = block_bytes[kSliding] * sliding;
  const int64_t full = block_bytes[kFull] == 0 || budget_bytes <= sliding_bytes
      ? 0 : std::min<int64_t>(want[kFull], (budget_bytes - sliding_bytes) / block_bytes[kFull]);
  shape.num_blocks[kFull] = static_cast<int32_t>(full);
  shape.num_blocks[kSliding] = static_cast<int32_t>(sliding);
  return shape;
}

}  // namespace gptoss
