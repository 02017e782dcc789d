// The CPU reference runner: the gpt-oss forward pass over a ragged batch,
// composed from ops.h, with float32 paged KV pools (one per attention kind).
//
// Tensor parallel over N ranks in one process (model/tensor_parallel.h): each
// rank holds its weight shard, its KV heads' pools and its partial sums; the
// all-reduce is a sum over the ranks' buffers. Ranks run one after another
// (each op is parallel over the thread pool), so TP=N is the readable oracle
// of the sharding that device backends run on N devices.
#include <algorithm>
#include <limits>
#include <string>

#include "backend/cpu/ops.h"
#include "backend/model_runner.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "model/tensor_parallel.h"
#include "model/weights.h"

namespace gptoss {

namespace {

using cpu::AttentionShape;
using cpu::PagedKvLayer;

// Scratch activations every rank shares (replicated on devices), reused
// across steps.
struct Activations {
  std::vector<float> x;         // [T, hidden] residual stream
  std::vector<float> h;         // [T, hidden] normed input of a block
  std::vector<float> cos, sin;  // [T, head_dim/2]
  std::vector<float> router;    // [T, num_experts]
  std::vector<int32_t> expert_ids;      // [T, k]
  std::vector<float> expert_weights;    // [T, k]
};

// One tensor-parallel rank: its shard of the weights, the KV pools of its KV
// heads and its scratch, with dimensions local to the rank.
struct Rank {
  WeightShard weights;
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  ShardRange experts;
  int32_t intermediate = 0;
  ShardRange vocab;
  std::vector<float> kv_pools[kNumAttnKinds];
  std::vector<float> q;           // [T, local q_dim]
  std::vector<float> k, v;        // [T, local kv_dim]
  std::vector<float> attn;        // [T, local q_dim]
  std::vector<float> partial;     // [T, hidden]: this rank's term of the next all-reduce
  std::vector<float> expert_out;  // [T, k, hidden]: entries of experts this rank runs
  std::vector<float> logits;      // [rows, vocab.size()]
};

// Where each token of the plan sits: its position and its chunk.
struct TokenSlot {
  int32_t pos = 0;
  int32_t chunk = 0;
};

class CpuRunner final : public ModelRunner {
 public:
  CpuRunner(const std::string& model_dir, int32_t num_threads, int32_t tensor_parallel, MoeSharding moe)
      : config_(load_model_config(model_dir)),
        plan_(config_, tensor_parallel, moe),
        weights_(load_weights(model_dir, config_)),
        pool_(num_threads),
        rope_(cpu::make_yarn_rope_table(config_.head_dim, config_.rope)) {
    int32_t per_kind[kNumAttnKinds] = {0, 0};
    for (AttnKind kind : config_.layer_kinds) {
      index_in_kind_.push_back(per_kind[static_cast<int>(kind)]++);
    }
    ranks_.resize(tensor_parallel);
    for (int32_t r = 0; r < tensor_parallel; ++r) {
      Rank& rank = ranks_[r];
      rank.weights = shard_weights(weights_, config_, plan_, r);
      rank.num_q_heads = plan_.q_heads(r).size();
      rank.num_kv_heads = plan_.kv_heads(r).size();
      rank.experts = plan_.experts(r);
      rank.intermediate = plan_.intermediate(r).size();
      rank.vocab = plan_.vocab(r);
    }
  }

  const ModelConfig& config() const override { return config_; }

  // All ranks together: every rank holds the blocks of its own KV heads.
  size_t kv_block_bytes(AttnKind kind, int32_t block_size) const override {
    return rank_block_floats(kind, block_size, config_.num_kv_heads) * sizeof(float);
  }

  void allocate_kv_cache(const KvCacheShape& shape) override {
    if (shape.block_size <= 0) throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "KV block_size must be positive");
    kv_shape_ = shape;
    for (int kind = 0; kind < kNumAttnKinds; ++kind) {
      if (shape.num_blocks[kind] < 0) throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "KV num_blocks must be >= 0");
      for (Rank& rank : ranks_) {
        const size_t floats = rank_block_floats(static_cast<AttnKind>(kind), shape.block_size, rank.num_kv_heads);
        rank.kv_pools[kind].assign(floats * shape.num_blocks[kind], 0.0f);
      }
    }
    kv_allocated_ = true;
  }

  uint64_t weight_bytes() const override { return weights_.checkpoint->total_bytes(); }

  void forward(const BatchPlan& plan, std::vector<float>& logits) override {
    const std::vector<TokenSlot> slots = validate(plan);
    const int32_t n = static_cast<int32_t>(plan.tokens.size());
    const ModelConfig& c = config_;
    Activations& a = act_;
    a.x.resize(static_cast<size_t>(n) * c.hidden_size);
    cpu::embed_tokens(plan.tokens.data(), n, weights_.embed_tokens, c.hidden_size, a.x.data());

    const int32_t half = c.head_dim / 2;
    a.cos.resize(static_cast<size_t>(n) * half);
    a.sin.resize(static_cast<size_t>(n) * half);
    for (int32_t t = 0; t < n; ++t) {
      cpu::rope_cos_sin(rope_, slots[t].pos, &a.cos[static_cast<size_t>(t) * half], &a.sin[static_cast<size_t>(t) * half]);
    }

    for (int32_t l = 0; l < c.num_layers; ++l) {
      attention_block(l, plan, slots);
      moe_block(l, n);
    }
    compute_logits(plan, logits);
  }

 private:
  size_t rank_block_floats(AttnKind kind, int32_t block_size, int32_t num_kv_heads) const {
    return static_cast<size_t>(config_.num_layers_of(kind)) * 2 * block_size * num_kv_heads * config_.head_dim;
  }

  // x += the sum of every rank's partial.
  void all_reduce_into_residual() {
    std::vector<const float*> partials;
    for (const Rank& rank : ranks_) partials.push_back(rank.partial.data());
    cpu::all_reduce_residual_add(act_.x.data(), partials.data(), static_cast<int32_t>(partials.size()),
                                 static_cast<int64_t>(act_.x.size()));
  }

  PagedKvLayer kv_layer(Rank& rank, int32_t layer) {
    const AttnKind kind = config_.layer_kinds[layer];
    PagedKvLayer kv;
    kv.pool = rank.kv_pools[static_cast<int>(kind)].data();
    kv.block_size = kv_shape_.block_size;
    kv.kv_dim = rank.num_kv_heads * config_.head_dim;
    kv.block_floats = static_cast<int64_t>(rank_block_floats(kind, kv.block_size, rank.num_kv_heads));
    const int64_t layer_floats = 2LL * kv.block_size * kv.kv_dim;
    kv.k_offset = index_in_kind_[layer] * layer_floats;
    kv.v_offset = kv.k_offset + static_cast<int64_t>(kv.block_size) * kv.kv_dim;
    return kv;
  }

  int32_t window_of(int32_t layer) const {
    return config_.layer_kinds[layer] == AttnKind::Sliding ? config_.sliding_window : 0;
  }

  // Checks the plan against the model and the KV pools so that a bad plan is
  // an Error, never an out-of-bounds access; returns each token's slot.
  std::vector<TokenSlot> validate(const BatchPlan& plan) const {
    const auto bad = [](const std::string& what) { throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "batch plan: " + what); };
    if (!kv_allocated_) throw Error(GPTOSS_ERR_BACKEND, "forward called before allocate_kv_cache");
    const int64_t n = static_cast<int64_t>(plan.tokens.size());
    std::vector<TokenSlot> slots(n);
    std::vector<bool> covered(n, false);
    for (size_t ci = 0; ci < plan.chunks.size(); ++ci) {
      const ChunkPlan& ch = plan.chunks[ci];
      const std::string where = "chunk " + std::to_string(ci) + ": ";
      if (ch.n_tokens <= 0 || ch.token_offset < 0 || ch.token_offset + static_cast<int64_t>(ch.n_tokens) > n) {
        bad(where + "token range outside the plan's tokens");
      }
      if (ch.start_pos < 0 || static_cast<int64_t>(ch.start_pos) + ch.n_tokens > std::numeric_limits<int32_t>::max()) {
        bad(where + "invalid start_pos");
      }
      const int32_t last = ch.start_pos + ch.n_tokens - 1;
      for (int kind = 0; kind < kNumAttnKinds; ++kind) {
        if (config_.num_layers_of(static_cast<AttnKind>(kind)) == 0) continue;
        const int32_t window = kind == static_cast<int>(AttnKind::Sliding) ? config_.sliding_window : 0;
        const int32_t first_block = cpu::attention_first_pos(ch.start_pos, window) / kv_shape_.block_size;
        const int32_t last_block = last / kv_shape_.block_size;
        if (ch.block_table[kind] == nullptr || ch.n_blocks[kind] <= last_block) {
          bad(where + "block table of attention kind " + std::to_string(kind) + " does not cover position " + std::to_string(last));
        }
        for (int32_t b = first_block; b <= last_block; ++b) {
          const int32_t id = ch.block_table[kind][b];
          if (id < 0 || id >= kv_shape_.num_blocks[kind]) {
            bad(where + "block " + std::to_string(b) + " of attention kind " + std::to_string(kind) + " is " +
                std::to_string(id) + ", outside the pool of " + std::to_string(kv_shape_.num_blocks[kind]));
          }
        }
      }
      for (int32_t i = 0; i < ch.n_tokens; ++i) {
        const int64_t t = ch.token_offset + i;
        if (covered[t]) bad(where + "token " + std::to_string(t) + " belongs to two chunks");
        covered[t] = true;
        slots[t] = TokenSlot{ch.start_pos + i, static_cast<int32_t>(ci)};
        const int32_t token = plan.tokens[t];
        if (token < 0 || token >= config_.vocab_size) {
          throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "token id " + std::to_string(token) + " outside the vocabulary of " +
                                                       std::to_string(config_.vocab_size));
        }
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      if (!covered[t]) bad("token " + std::to_string(t) + " belongs to no chunk");
    }
    return slots;
  }

  void attention_block(int32_t layer, const BatchPlan& plan, const std::vector<TokenSlot>& slots) {
    const ModelConfig& c = config_;
    act_.h.resize(act_.x.size());
    cpu::rmsnorm(act_.x.data(), static_cast<int32_t>(slots.size()), c.hidden_size,
                 weights_.layers[layer].input_norm, c.rms_norm_eps, act_.h.data());
    for (Rank& rank : ranks_) rank_attention(rank, layer, plan, slots);
    all_reduce_into_residual();
  }

  // The rank's heads: QKV, RoPE, KV store, attention, and its rows of the
  // output projection into rank.partial.
  void rank_attention(Rank& rank, int32_t layer, const BatchPlan& plan, const std::vector<TokenSlot>& slots) {
    const ModelConfig& c = config_;
    const LayerWeights& w = rank.weights.layers[layer];
    const Activations& a = act_;
    const int32_t n = static_cast<int32_t>(slots.size());
    const int32_t half = c.head_dim / 2;
    const int kind = static_cast<int>(c.layer_kinds[layer]);
    const int32_t q_dim = rank.num_q_heads * c.head_dim;
    const int32_t kv_dim = rank.num_kv_heads * c.head_dim;
    rank.q.resize(static_cast<size_t>(n) * q_dim);
    rank.k.resize(static_cast<size_t>(n) * kv_dim);
    rank.v.resize(static_cast<size_t>(n) * kv_dim);
    rank.attn.resize(rank.q.size());
    rank.partial.resize(a.x.size());

    cpu::linear_bf16(a.h.data(), n, c.hidden_size, w.q_weight, w.q_bias, q_dim, rank.q.data(), &pool_);
    cpu::linear_bf16(a.h.data(), n, c.hidden_size, w.k_weight, w.k_bias, kv_dim, rank.k.data(), &pool_);
    cpu::linear_bf16(a.h.data(), n, c.hidden_size, w.v_weight, w.v_bias, kv_dim, rank.v.data(), &pool_);

    // Every planned token's K/V goes into the cache before any query reads
    // it: a chunk's tokens attend to each other causally through the cache.
    const PagedKvLayer kv = kv_layer(rank, layer);
    for (int32_t t = 0; t < n; ++t) {
      const float* cos = &a.cos[static_cast<size_t>(t) * half];
      const float* sin = &a.sin[static_cast<size_t>(t) * half];
      float* q = &rank.q[static_cast<size_t>(t) * q_dim];
      float* k = &rank.k[static_cast<size_t>(t) * kv_dim];
      cpu::apply_rope(q, rank.num_q_heads, c.head_dim, cos, sin);
      cpu::apply_rope(k, rank.num_kv_heads, c.head_dim, cos, sin);
      cpu::kv_store(kv, plan.chunks[slots[t].chunk].block_table[kind], slots[t].pos, k,
                    &rank.v[static_cast<size_t>(t) * kv_dim]);
    }

    // Heads are local: the rank's whole GQA groups keep the model's ratio.
    const AttentionShape shape{rank.num_q_heads, rank.num_kv_heads, c.head_dim};
    const int32_t window = window_of(layer);
    pool_.parallel_for(static_cast<int64_t>(n) * rank.num_q_heads, [&](int64_t begin, int64_t end) {
      std::vector<float> scores;
      for (int64_t item = begin; item < end; ++item) {
        const int32_t t = static_cast<int32_t>(item / rank.num_q_heads);
        const int32_t head = static_cast<int32_t>(item % rank.num_q_heads);
        const size_t offset = static_cast<size_t>(t) * q_dim + static_cast<size_t>(head) * c.head_dim;
        cpu::attention_head(&rank.q[offset], head, shape, kv, plan.chunks[slots[t].chunk].block_table[kind],
                            slots[t].pos, window, bf16_to_float(w.sinks[head]), scores, &rank.attn[offset]);
      }
    });

    cpu::linear_bf16(rank.attn.data(), n, q_dim, w.o_weight, w.o_bias, c.hidden_size, rank.partial.data(), &pool_);
  }

  void moe_block(int32_t layer, int32_t n) {
    const ModelConfig& c = config_;
    const LayerWeights& w = weights_.layers[layer];
    Activations& a = act_;
    const int32_t top_k = c.experts_per_token;

    cpu::rmsnorm(a.x.data(), n, c.hidden_size, w.post_attention_norm, c.rms_norm_eps, a.h.data());
    // The router is replicated: every rank would compute these same values,
    // so they are computed once here.
    a.router.resize(static_cast<size_t>(n) * c.num_experts);
    cpu::linear_bf16(a.h.data(), n, c.hidden_size, w.router_weight, w.router_bias, c.num_experts, a.router.data(), &pool_);
    a.expert_ids.resize(static_cast<size_t>(n) * top_k);
    a.expert_weights.resize(static_cast<size_t>(n) * top_k);
    for (int32_t t = 0; t < n; ++t) {
      cpu::router_top_k(&a.router[static_cast<size_t>(t) * c.num_experts], c.num_experts, top_k,
                        &a.expert_ids[static_cast<size_t>(t) * top_k], &a.expert_weights[static_cast<size_t>(t) * top_k]);
    }
    for (Rank& rank : ranks_) rank_experts(rank, layer, n);
    all_reduce_into_residual();
  }

  // The rank's experts (or its columns of every expert) over the tokens
  // routed to them, weighted and summed per token into rank.partial.
  void rank_experts(Rank& rank, int32_t layer, int32_t n) {
    const ModelConfig& c = config_;
    const LayerWeights& w = rank.weights.layers[layer];
    const Activations& a = act_;
    const int32_t top_k = c.experts_per_token;
    const size_t hidden = c.hidden_size;

    // Tokens are grouped by expert so each expert's weights are read once per
    // step; every row is still computed on its own (batch invariance).
    rank.expert_out.resize(static_cast<size_t>(n) * top_k * hidden);
    std::vector<std::vector<int32_t>> assignments(c.num_experts);  // entries t*top_k + k
    for (int32_t i = 0; i < n * top_k; ++i) assignments[a.expert_ids[i]].push_back(i);
    std::vector<float> rows, gate_up, activated, out;
    for (int32_t e = rank.experts.begin; e < rank.experts.end; ++e) {
      const std::vector<int32_t>& entries = assignments[e];
      if (entries.empty()) continue;
      const int32_t local = e - rank.experts.begin;
      const int32_t m = static_cast<int32_t>(entries.size());
      rows.resize(static_cast<size_t>(m) * hidden);
      for (int32_t r = 0; r < m; ++r) {
        const float* src = &a.h[static_cast<size_t>(entries[r] / top_k) * hidden];
        std::copy(src, src + hidden, &rows[static_cast<size_t>(r) * hidden]);
      }
      gate_up.resize(static_cast<size_t>(m) * 2 * rank.intermediate);
      activated.resize(static_cast<size_t>(m) * rank.intermediate);
      out.resize(static_cast<size_t>(m) * hidden);
      cpu::linear_mxfp4(rows.data(), m, w.gate_up.expert(local), w.gate_up.expert_bias(local), gate_up.data(), &pool_);
      cpu::swiglu_clamped(gate_up.data(), m, rank.intermediate, c.swiglu_limit, activated.data());
      cpu::linear_mxfp4(activated.data(), m, w.down.expert(local), w.down.expert_bias(local), out.data(), &pool_);
      for (int32_t r = 0; r < m; ++r) {
        std::copy(&out[static_cast<size_t>(r) * hidden], &out[static_cast<size_t>(r + 1) * hidden],
                  &rank.expert_out[static_cast<size_t>(entries[r]) * hidden]);
      }
    }

    // partial = sum over the token's routed experts this rank runs (in
    // routing order) of weight * expert output.
    rank.partial.resize(static_cast<size_t>(n) * hidden);
    for (int32_t t = 0; t < n; ++t) {
      float* p = &rank.partial[static_cast<size_t>(t) * hidden];
      for (size_t d = 0; d < hidden; ++d) {
        float sum = 0.0f;
        for (int32_t r = 0; r < top_k; ++r) {
          const size_t entry = static_cast<size_t>(t) * top_k + r;
          if (!rank.experts.contains(a.expert_ids[entry])) continue;
          sum += a.expert_weights[entry] * rank.expert_out[entry * hidden + d];
        }
        p[d] = sum;
      }
    }
  }

  // The final norm is replicated; each rank computes its vocabulary columns,
  // gathered here into whole rows (the host sampler reads whole rows).
  void compute_logits(const BatchPlan& plan, std::vector<float>& logits) {
    const ModelConfig& c = config_;
    Activations& a = act_;
    const size_t hidden = c.hidden_size;
    std::vector<float> last_rows;
    int32_t rows = 0;
    for (const ChunkPlan& ch : plan.chunks) {
      if (!ch.want_logits) continue;
      const float* src = &a.x[static_cast<size_t>(ch.token_offset + ch.n_tokens - 1) * hidden];
      last_rows.insert(last_rows.end(), src, src + hidden);
      ++rows;
    }
    logits.resize(static_cast<size_t>(rows) * c.vocab_size);
    if (rows == 0) return;
    cpu::rmsnorm(last_rows.data(), rows, c.hidden_size, weights_.final_norm, c.rms_norm_eps, last_rows.data());
    for (Rank& rank : ranks_) {
      const int32_t width = rank.vocab.size();
      rank.logits.resize(static_cast<size_t>(rows) * width);
      cpu::linear_bf16(last_rows.data(), rows, c.hidden_size, rank.weights.lm_head, nullptr, width,
                       rank.logits.data(), &pool_);
      for (int32_t r = 0; r < rows; ++r) {
        std::copy(&rank.logits[static_cast<size_t>(r) * width], &rank.logits[static_cast<size_t>(r + 1) * width],
                  &logits[static_cast<size_t>(r) * c.vocab_size + rank.vocab.begin]);
      }
    }
  }

  ModelConfig config_;
  TensorParallelPlan plan_;
  Weights weights_;
  ThreadPool pool_;
  cpu::RopeTable rope_;
  std::vector<int32_t> index_in_kind_;  // per layer: its index among layers of its kind
  KvCacheShape kv_shape_;
  bool kv_allocated_ = false;
  std::vector<Rank> ranks_;
  Activations act_;
};

}  // namespace

std::unique_ptr<ModelRunner> make_cpu_runner(const std::string& model_dir, int32_t num_threads,
                                             int32_t tensor_parallel, MoeSharding moe) {
  return std::make_unique<CpuRunner>(model_dir, num_threads, tensor_parallel, moe);
}

}  // namespace gptoss
