// plan_kv_cache: how many blocks each KV pool gets.
#pragma once

#include <cstdint>

#include "backend/model_runner.h"

namespace gptoss {

struct KvDemand {
  int32_t block_size = 16;
  int32_t max_num_seqs = 1;
  int32_t max_model_len = 1;
  int32_t max_batched_tokens = 1;
};

// Splits `budget_bytes` between the full and sliding pools in proportion to
// what `demand` can use at most: every running sequence at max_model_len in
// the full pool, and in the sliding pool every sequence's window plus one
// step's worth of prefill tokens. A budget of 0 means exactly that maximum.
// A budget above it is used whole: running sequences can never need more,
// but cached prefixes can (they stay until memory is needed), so the surplus
// grows both pools block for block — a hit needs its window's sliding blocks
// beside the full ones (docs/ARCHITECTURE.md, "Sliding-window layers").
KvCacheShape plan_kv_cache(const ModelRunner& runner, uint64_t budget_bytes, const KvDemand& demand);

}  // namespace gptoss
