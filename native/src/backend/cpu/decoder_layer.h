// One gpt-oss decoder layer of the CPU reference, in the pieces a caller
// needs to run it on chosen rows. The CPU runner runs every piece on all of a
// step's rows; the teacher-forced layer check (backend/layer_check.h) stores
// K/V for the rows its sample reads and runs the rest on the sample alone.
// Every piece computes each row on its own (ops.h: batch invariance), so a row
// gets the same bits whichever other rows share the call.
#pragma once

#include <cstdint>

#include "backend/cpu/ops.h"
#include "common/thread_pool.h"
#include "model/config.h"
#include "model/weights.h"

namespace gptoss::cpu {

// Where a row sits: its position and its sequence's block table in the pool
// of the layer's attention kind.
struct RowSlot {
  int32_t pos = 0;
  const int32_t* block_table = nullptr;
};

// The MoE block's choices for n rows.
struct MoeRouting {
  float* router_logits = nullptr;   // [n, num_experts]
  int32_t* experts = nullptr;       // [n, experts_per_token], by rank
  float* expert_weights = nullptr;  // [n, experts_per_token]
};

class DecoderLayer {
 public:
  // `pool` may be null (single-threaded); the results do not depend on it.
  DecoderLayer(const ModelConfig& config, int32_t layer, const LayerWeights& weights,
               const RopeTable& rope, ThreadPool* pool);

  // 0 on full-attention layers, else the sliding window.
  int32_t window() const { return window_; }

  // h = rmsnorm(x) with the attention's input norm; n rows of hidden floats.
  void attention_norm(const float* x, int32_t n, float* h) const;
  // K and V of n normalised rows, k rotated at each row's position, stored in
  // each row's cache slot.
  void store_kv(const float* h, const RowSlot* slots, int32_t n, const PagedKvLayer& kv) const;
  // attn = attention of n normalised rows (q projected, rotated) over the
  // cached K/V, before the output projection: [n, q_dim]. Every position a
  // row reads must have been stored.
  void attend(const float* h, const RowSlot* slots, int32_t n, const PagedKvLayer& kv,
              float* attn) const;
  // x += attn . o_weight^T + o_bias, row by row.
  void add_attention_output(const float* attn, int32_t n, float* x) const;
  // The MoE block of n rows of the residual stream x (after attention):
  // routes rmsnorm(x) and writes delta = sum over ranks, in rank order, of
  // expert weight * expert output; [n, hidden]. The caller adds delta to x.
  void moe(const float* x, int32_t n, const MoeRouting& routing, float* delta) const;

 private:
  const ModelConfig& config_;
  const LayerWeights& w_;
  const RopeTable& rope_;
  ThreadPool* pool_;
  int32_t window_;
};

}  // namespace gptoss::cpu
