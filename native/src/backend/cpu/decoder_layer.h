// One gpt-oss decoder layer of the CPU reference, in the pieces a caller
// needs to run it on chosen rows and on one tensor-parallel rank's shard. The
// CPU runner runs every piece on all of a step's rows, once per rank, and
// sums the ranks' partial outputs itself (the all-reduce); the teacher-forced
// layer check (backend/layer_check.h) runs the whole layer, stores K/V for
// the rows its sample reads and runs the rest on the sample alone.
// Every piece computes each row on its own (ops.h: batch invariance), so a row
// gets the same bits whichever other rows share the call.
#pragma once

#include <cstdint>

#include "backend/cpu/ops.h"
#include "common/thread_pool.h"
#include "model/config.h"
#include "model/tensor_parallel.h"
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

// The slice of a layer one rank computes, in the dimensions of its
// LayerWeights (model/tensor_parallel.h: shard_weights).
struct LayerShard {
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  ShardRange experts;        // global ids of the experts the weights hold
  int32_t intermediate = 0;  // the columns of every expert it holds

  // The whole layer: TP=1, or the layer check.
  static LayerShard whole(const ModelConfig& config);
  static LayerShard of(const TensorParallelPlan& plan, int32_t rank);
};

class DecoderLayer {
 public:
  // `weights` are the shard's; `pool` may be null (single-threaded); the
  // results do not depend on it.
  DecoderLayer(const ModelConfig& config, int32_t layer, const LayerWeights& weights, const LayerShard& shard,
               const RopeTable& rope, ThreadPool* pool);

  // 0 on full-attention layers, else the sliding window.
  int32_t window() const { return window_; }

  // h = rmsnorm(x) with the attention's input norm; n rows of hidden floats.
  void attention_norm(const float* x, int32_t n, float* h) const;
  // K and V of the shard's KV heads for n normalised rows, k rotated at each
  // row's position, stored in each row's cache slot (`kv` holds those heads).
  void store_kv(const float* h, const RowSlot* slots, int32_t n, const PagedKvLayer& kv) const;
  // attn = attention of the shard's query heads for n normalised rows (q
  // projected, rotated) over the cached K/V, before the output projection:
  // [n, shard q_dim]. Every position a row reads must have been stored.
  void attend(const float* h, const RowSlot* slots, int32_t n, const PagedKvLayer& kv,
              float* attn) const;
  // out = attn . o_weight^T + o_bias, row by row: [n, hidden], the shard's
  // term of the attention output (the bias is rank 0's). The caller adds the
  // shards' terms to x.
  void attention_output(const float* attn, int32_t n, float* out) const;
  // h = rmsnorm(x) with the MoE's input norm, and each of its n rows routed
  // (router logits, top-k experts and their weights). Norm and router are
  // replicated, so one shard routes for all.
  void route(const float* x, int32_t n, const MoeRouting& routing, float* h) const;
  // delta = sum over each row's routed experts the shard holds, in routing
  // order, of expert weight * expert output on the shard's columns; [n,
  // hidden]. The caller adds the shards' deltas to x.
  void experts(const float* h, int32_t n, const MoeRouting& routing, float* delta) const;

 private:
  const ModelConfig& config_;
  const LayerWeights& w_;
  const LayerShard shard_;
  const RopeTable& rope_;
  ThreadPool* pool_;
  int32_t window_;
};

}  // namespace gptoss::cpu
