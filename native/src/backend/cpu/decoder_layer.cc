#include "backend/cpu/decoder_layer.h"

#include <algorithm>
#include <vector>

namespace gptoss::cpu {

LayerShard LayerShard::whole(const ModelConfig& config) {
  return LayerShard{config.num_q_heads, config.num_kv_heads, ShardRange{0, config.num_experts},
                    config.intermediate_size};
}

LayerShard LayerShard::of(const TensorParallelPlan& plan, int32_t rank) {
  return LayerShard{plan.q_heads(rank).size(), plan.kv_heads(rank).size(), plan.experts(rank),
                    plan.intermediate(rank).size()};
}

DecoderLayer::DecoderLayer(const ModelConfig& config, int32_t layer, const LayerWeights& weights,
                           const LayerShard& shard, const RopeTable& rope, ThreadPool* pool)
    : config_(config),
      w_(weights),
      shard_(shard),
      rope_(rope),
      pool_(pool),
      window_(config.layer_kinds[layer] == AttnKind::Sliding ? config.sliding_window : 0) {}

void DecoderLayer::attention_norm(const float* x, int32_t n, float* h) const {
  rmsnorm(x, n, config_.hidden_size, w_.input_norm, config_.rms_norm_eps, h);
}

void DecoderLayer::store_kv(const float* h, const RowSlot* slots, int32_t n,
                            const PagedKvLayer& kv) const {
  const ModelConfig& c = config_;
  const int32_t kv_dim = shard_.num_kv_heads * c.head_dim;
  std::vector<float> k(static_cast<size_t>(n) * kv_dim), v(k.size()), cos(c.head_dim / 2), sin(c.head_dim / 2);
  linear_bf16(h, n, c.hidden_size, w_.k_weight, w_.k_bias, kv_dim, k.data(), pool_);
  linear_bf16(h, n, c.hidden_size, w_.v_weight, w_.v_bias, kv_dim, v.data(), pool_);
  for (int32_t r = 0; r < n; ++r) {
    const size_t row = static_cast<size_t>(r) * kv_dim;
    rope_cos_sin(rope_, slots[r].pos, cos.data(), sin.data());
    apply_rope(&k[row], shard_.num_kv_heads, c.head_dim, cos.data(), sin.data());
    kv_store(kv, slots[r].block_table, slots[r].pos, &k[row], &v[row]);
  }
}

void DecoderLayer::attend(const float* h, const RowSlot* slots, int32_t n, const PagedKvLayer& kv,
                          float* attn) const {
  const ModelConfig& c = config_;
  const int32_t heads = shard_.num_q_heads;
  const size_t q_dim = static_cast<size_t>(heads) * c.head_dim;
  std::vector<float> q(n * q_dim), cos(c.head_dim / 2), sin(c.head_dim / 2);
  linear_bf16(h, n, c.hidden_size, w_.q_weight, w_.q_bias, static_cast<int32_t>(q_dim), q.data(), pool_);
  for (int32_t r = 0; r < n; ++r) {
    rope_cos_sin(rope_, slots[r].pos, cos.data(), sin.data());
    apply_rope(&q[r * q_dim], heads, c.head_dim, cos.data(), sin.data());
  }
  // Heads are the shard's: its whole GQA groups keep the model's ratio, and
  // its sinks are its heads'.
  const AttentionShape shape{heads, shard_.num_kv_heads, c.head_dim};
  auto rows = [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t item = begin; item < end; ++item) {
      const int32_t r = static_cast<int32_t>(item / heads);
      const int32_t head = static_cast<int32_t>(item % heads);
      const size_t offset = r * q_dim + static_cast<size_t>(head) * c.head_dim;
      attention_head(&q[offset], head, shape, kv, slots[r].block_table, slots[r].pos, window_,
                     bf16_to_float(w_.sinks[head]), scores, &attn[offset]);
    }
  };
  const int64_t items = static_cast<int64_t>(n) * heads;
  if (pool_) pool_->parallel_for(items, rows);
  else rows(0, items);
}

void DecoderLayer::attention_output(const float* attn, int32_t n, float* out) const {
  const ModelConfig& c = config_;
  linear_bf16(attn, n, shard_.num_q_heads * c.head_dim, w_.o_weight, w_.o_bias, c.hidden_size, out, pool_);
}

void DecoderLayer::route(const float* x, int32_t n, const MoeRouting& routing, float* h) const {
  const ModelConfig& c = config_;
  const int32_t top_k = c.experts_per_token;
  rmsnorm(x, n, c.hidden_size, w_.post_attention_norm, c.rms_norm_eps, h);
  linear_bf16(h, n, c.hidden_size, w_.router_weight, w_.router_bias, c.num_experts, routing.router_logits, pool_);
  for (int32_t t = 0; t < n; ++t) {
    router_top_k(&routing.router_logits[static_cast<size_t>(t) * c.num_experts], c.num_experts, top_k,
                 &routing.experts[t * top_k], &routing.expert_weights[t * top_k]);
  }
}

void DecoderLayer::experts(const float* h, int32_t n, const MoeRouting& routing, float* delta) const {
  const ModelConfig& c = config_;
  const int32_t top_k = c.experts_per_token;
  const size_t hidden = c.hidden_size;
  const ShardRange held = shard_.experts;

  // Rows are grouped by expert so each expert's weights are read once per
  // call; every row is still computed on its own (batch invariance).
  std::vector<float> expert_out(static_cast<size_t>(n) * top_k * hidden);
  std::vector<std::vector<int32_t>> assignments(c.num_experts);  // entries t*top_k + rank
  for (int32_t i = 0; i < n * top_k; ++i) assignments[routing.experts[i]].push_back(i);
  std::vector<float> rows, gate_up, activated, out;
  for (int32_t e = held.begin; e < held.end; ++e) {
    const std::vector<int32_t>& entries = assignments[e];
    if (entries.empty()) continue;
    const int32_t local = e - held.begin;
    const int32_t m = static_cast<int32_t>(entries.size());
    rows.resize(m * hidden);
    for (int32_t r = 0; r < m; ++r) {
      const float* src = &h[(entries[r] / top_k) * hidden];
      std::copy(src, src + hidden, &rows[r * hidden]);
    }
    gate_up.resize(static_cast<size_t>(m) * 2 * shard_.intermediate);
    activated.resize(static_cast<size_t>(m) * shard_.intermediate);
    out.resize(m * hidden);
    linear_mxfp4(rows.data(), m, w_.gate_up.expert(local), w_.gate_up.expert_bias(local), gate_up.data(), pool_);
    swiglu_clamped(gate_up.data(), m, shard_.intermediate, c.swiglu_limit, activated.data());
    linear_mxfp4(activated.data(), m, w_.down.expert(local), w_.down.expert_bias(local), out.data(), pool_);
    for (int32_t r = 0; r < m; ++r)
      std::copy(&out[r * hidden], &out[(r + 1) * hidden], &expert_out[entries[r] * hidden]);
  }

  for (int32_t t = 0; t < n; ++t) {
    for (size_t d = 0; d < hidden; ++d) {
      float sum = 0.0f;
      for (int32_t r = 0; r < top_k; ++r) {
        const size_t entry = static_cast<size_t>(t) * top_k + r;
        if (!held.contains(routing.experts[entry])) continue;
        sum += routing.expert_weights[entry] * expert_out[entry * hidden + d];
      }
      delta[t * hidden + d] = sum;
    }
  }
}

}  // namespace gptoss::cpu
