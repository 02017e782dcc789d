// The CPU reference runner: the gpt-oss forward pass over a ragged batch,
// composed from ops.h, with float32 paged KV pools (one per attention kind).
//
// Tensor parallel over N ranks in one process (model/tensor_parallel.h): each
// rank holds its weight shard, its KV heads' pools and its partial sums, and
// runs cpu::DecoderLayer on its shard; the all-reduce is a sum over the
// ranks' buffers. Ranks run one after another (each op is parallel over the
// thread pool), so TP=N is the readable oracle of the sharding that device
// backends run on N devices. TP=1 is one rank holding the whole layer.
// Over ranks the runner samples itself (forward_sampled): each rank reduces
// its vocabulary slice of a logits row and only the summaries meet
// (runtime/sliced_sampling.h), as device ranks do.
#include <algorithm>
#include <limits>
#include <string>

#include "backend/cpu/decoder_layer.h"
#include "backend/cpu/ops.h"
#include "backend/model_runner.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "model/tensor_parallel.h"
#include "model/weights.h"
#include "runtime/sliced_sampling.h"

namespace gptoss {

namespace {

using cpu::PagedKvLayer;

// Scratch activations every rank shares (replicated on devices), reused
// across steps.
struct Activations {
  std::vector<float> x;                // [T, hidden] residual stream
  std::vector<float> h;                // [T, hidden] normed input of a block
  std::vector<float> router;           // [T, num_experts]
  std::vector<int32_t> expert_ids;     // [T, k]
  std::vector<float> expert_weights;   // [T, k]
};

// One tensor-parallel rank: its shard of the weights, the KV pools of its KV
// heads and its scratch, with dimensions local to the rank.
struct Rank {
  WeightShard weights;
  cpu::LayerShard shard;
  ShardRange vocab;
  std::vector<float> kv_pools[kNumAttnKinds];
  std::vector<float> attn;     // [T, local q_dim]
  std::vector<float> partial;  // [T, hidden]: this rank's term of the next all-reduce
  std::vector<float> logits;   // [rows, vocab.size()]
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
      rank.shard = cpu::LayerShard::of(plan_, r);
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
        const size_t floats = rank_block_floats(static_cast<AttnKind>(kind), shape.block_size, rank.shard.num_kv_heads);
        rank.kv_pools[kind].assign(floats * shape.num_blocks[kind], 0.0f);
      }
    }
    kv_allocated_ = true;
  }

  uint64_t weight_bytes() const override { return weights_.checkpoint->total_bytes(); }

  // Whole rows: every rank's vocabulary columns gathered.
  void forward(const BatchPlan& plan, std::vector<float>& logits) override {
    const ModelConfig& c = config_;
    const int32_t rows = forward_ranks(plan);
    logits.resize(static_cast<size_t>(rows) * c.vocab_size);
    for (const Rank& rank : ranks_) {
      const int32_t width = rank.vocab.size();
      for (int32_t r = 0; r < rows; ++r) {
        std::copy(&rank.logits[static_cast<size_t>(r) * width], &rank.logits[static_cast<size_t>(r + 1) * width],
                  &logits[static_cast<size_t>(r) * c.vocab_size + rank.vocab.begin]);
      }
    }
  }

  bool samples_on_device() const override { return ranks_.size() > 1; }

  // Over ranks: sampling over the ranks' vocabulary slices, never whole rows.
  void forward_sampled(const BatchPlan& plan, const std::vector<RowSampling>& rows, std::vector<SampledToken>& out,
                       const std::function<void()>& await_masks) override {
    if (static_cast<int32_t>(rows.size()) != plan.num_logit_rows())
      throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "forward_sampled: one RowSampling per logits row");
    forward_ranks(plan);
    if (await_masks) await_masks();
    std::vector<ShardRange> ids;
    for (const Rank& rank : ranks_) ids.push_back(rank.vocab);
    static const std::unordered_map<int32_t, int32_t> kNoCounts;
    out.resize(rows.size());
    for (size_t r = 0; r < rows.size(); ++r) {
      std::vector<const float*> slices;
      for (const Rank& rank : ranks_) slices.push_back(&rank.logits[r * rank.vocab.size()]);
      const RowSampling& row = rows[r];
      out[r] = sliced_sampler_.sample(slices, ids, *row.params, row.generated_counts ? *row.generated_counts : kNoCounts,
                                      row.counter, row.allowed);
    }
  }

 private:
  // The step on every rank, up to each rank's vocabulary columns of the
  // logits rows (Rank::logits); returns the rows.
  int32_t forward_ranks(const BatchPlan& plan) {
    const std::vector<TokenSlot> slots = validate(plan);
    const int32_t n = static_cast<int32_t>(plan.tokens.size());
    const ModelConfig& c = config_;
    Activations& a = act_;
    a.x.resize(static_cast<size_t>(n) * c.hidden_size);
    cpu::embed_tokens(plan.tokens.data(), n, weights_.embed_tokens, c.hidden_size, a.x.data());

    for (int kind = 0; kind < kNumAttnKinds; ++kind) {
      row_slots_[kind].resize(n);
      for (int32_t t = 0; t < n; ++t)
        row_slots_[kind][t] = cpu::RowSlot{slots[t].pos, plan.chunks[slots[t].chunk].block_table[kind]};
    }
    for (int32_t l = 0; l < c.num_layers; ++l) run_layer(l, n);
    return compute_rank_logits(plan);
  }

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
    kv.kv_dim = rank.shard.num_kv_heads * config_.head_dim;
    kv.block_floats = static_cast<int64_t>(rank_block_floats(kind, kv.block_size, rank.shard.num_kv_heads));
    const int64_t layer_floats = 2LL * kv.block_size * kv.kv_dim;
    kv.k_offset = index_in_kind_[layer] * layer_floats;
    kv.v_offset = kv.k_offset + static_cast<int64_t>(kv.block_size) * kv.kv_dim;
    return kv;
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

  // One decoder layer over all n rows, each rank on its shard: every row's
  // K/V goes into the cache before any query reads it, so a chunk's tokens
  // attend to each other causally through the cache. Norms and the router
  // are replicated, so rank 0 computes them once for all.
  void run_layer(int32_t layer, int32_t n) {
    const ModelConfig& c = config_;
    std::vector<cpu::DecoderLayer> blocks;
    for (const Rank& rank : ranks_)
      blocks.emplace_back(c, layer, rank.weights.layers[layer], rank.shard, rope_, &pool_);
    const cpu::RowSlot* slots = row_slots_[static_cast<int>(c.layer_kinds[layer])].data();
    Activations& a = act_;
    a.h.resize(a.x.size());
    a.router.resize(static_cast<size_t>(n) * c.num_experts);
    a.expert_ids.resize(static_cast<size_t>(n) * c.experts_per_token);
    a.expert_weights.resize(a.expert_ids.size());
    const cpu::MoeRouting routing{a.router.data(), a.expert_ids.data(), a.expert_weights.data()};

    blocks[0].attention_norm(a.x.data(), n, a.h.data());
    for (size_t r = 0; r < ranks_.size(); ++r) {
      Rank& rank = ranks_[r];
      const PagedKvLayer kv = kv_layer(rank, layer);
      rank.attn.resize(static_cast<size_t>(n) * rank.shard.num_q_heads * c.head_dim);
      rank.partial.resize(a.x.size());
      blocks[r].store_kv(a.h.data(), slots, n, kv);
      blocks[r].attend(a.h.data(), slots, n, kv, rank.attn.data());
      blocks[r].attention_output(rank.attn.data(), n, rank.partial.data());
    }
    all_reduce_into_residual();

    blocks[0].route(a.x.data(), n, routing, a.h.data());
    for (size_t r = 0; r < ranks_.size(); ++r) blocks[r].experts(a.h.data(), n, routing, ranks_[r].partial.data());
    all_reduce_into_residual();
  }

  // The final norm is replicated; each rank computes its vocabulary columns
  // of the logits rows into Rank::logits [rows, its vocabulary]. Returns the rows.
  int32_t compute_rank_logits(const BatchPlan& plan) {
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
    if (rows == 0) return 0;
    cpu::rmsnorm(last_rows.data(), rows, c.hidden_size, weights_.final_norm, c.rms_norm_eps, last_rows.data());
    for (Rank& rank : ranks_) {
      const int32_t width = rank.vocab.size();
      rank.logits.resize(static_cast<size_t>(rows) * width);
      cpu::linear_bf16(last_rows.data(), rows, c.hidden_size, rank.weights.lm_head, nullptr, width,
                       rank.logits.data(), &pool_);
    }
    return rows;
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
  SlicedSampler sliced_sampler_{config_.vocab_size};
  Activations act_;
  std::vector<cpu::RowSlot> row_slots_[kNumAttnKinds];  // per kind: each row of the step
};

}  // namespace

std::unique_ptr<ModelRunner> make_cpu_runner(const std::string& model_dir, int32_t num_threads,
                                             int32_t tensor_parallel, MoeSharding moe) {
  return std::make_unique<CpuRunner>(model_dir, num_threads, tensor_parallel, moe);
}

}  // namespace gptoss
