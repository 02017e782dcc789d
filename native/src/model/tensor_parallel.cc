#include "model/tensor_parallel.h"

#include <cstring>

#include "common/error.h"

namespace gptoss {

MoeSharding parse_moe_sharding(const std::string& name) {
  if (name == "intermediate") return MoeSharding::Intermediate;
  if (name == "experts") return MoeSharding::Experts;
  throw Error(GPTOSS_ERR_INVALID_ARGUMENT,
              "moe_sharding \"" + name + "\" is unknown; use \"intermediate\" or \"experts\"");
}

const char* moe_sharding_name(MoeSharding s) { return s == MoeSharding::Experts ? "experts" : "intermediate"; }

TpAllReduce parse_tp_all_reduce(const std::string& name) {
  if (name == "peer") return TpAllReduce::Peer;
  if (name == "nccl") return TpAllReduce::Nccl;
  throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "tp_all_reduce \"" + name + "\" is unknown; use \"peer\" or \"nccl\"");
}

TensorParallelPlan::TensorParallelPlan(const ModelConfig& config, int32_t world_size, MoeSharding moe)
    : config_(config), world_size_(world_size), moe_(moe) {
  const auto bad = [&](const std::string& why) {
    throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "tensor_parallel = " + std::to_string(world_size) + ": " + why);
  };
  if (world_size < 1) bad("must be >= 1");
  if (config.num_kv_heads % world_size != 0) {
    bad("the model's " + std::to_string(config.num_kv_heads) + " KV heads do not split into whole GQA groups");
  }
  if (config.vocab_size < world_size) bad("more ranks than vocabulary rows");
  if (moe == MoeSharding::Experts && config.num_experts % world_size != 0) {
    bad("the model's " + std::to_string(config.num_experts) + " experts do not split evenly (moe_sharding \"experts\")");
  }
  if (moe == MoeSharding::Intermediate && config.intermediate_size % (world_size * kMxfp4BlockValues) != 0) {
    bad("the intermediate size " + std::to_string(config.intermediate_size) + " does not split into whole " +
        std::to_string(kMxfp4BlockValues) + "-column MXFP4 blocks (moe_sharding \"intermediate\")");
  }
}

ShardRange TensorParallelPlan::intermediate(int32_t rank) const {
  return moe_ == MoeSharding::Intermediate ? even(config_.intermediate_size, rank)
                                           : ShardRange{0, config_.intermediate_size};
}

ShardRange TensorParallelPlan::experts(int32_t rank) const {
  return moe_ == MoeSharding::Experts ? even(config_.num_experts, rank) : ShardRange{0, config_.num_experts};
}

ShardRange TensorParallelPlan::vocab(int32_t rank) const {
  const int64_t v = config_.vocab_size;
  return {static_cast<int32_t>(v * rank / world_size_), static_cast<int32_t>(v * (rank + 1) / world_size_)};
}

namespace {

// Copies the strided slices of one rank into storage the shard owns.
class SliceCopier {
 public:
  explicit SliceCopier(WeightShard& shard) : shard_(shard) {}

  // Elements [col_begin, col_begin + cols) of each of `rows` rows of
  // `row_len` elements; the source itself when that is all of every row.
  template <typename T>
  const T* columns(const T* src, int64_t rows, int64_t row_len, int64_t col_begin, int64_t cols) {
    if (col_begin == 0 && cols == row_len) return src;
    T* dst = allocate<T>(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(dst + r * cols, src + r * row_len + col_begin, cols * sizeof(T));
    }
    return dst;
  }

 private:
  template <typename T>
  T* allocate(int64_t n) {
    shard_.storage.push_back(std::make_unique<uint8_t[]>(n * sizeof(T)));
    return reinterpret_cast<T*>(shard_.storage.back().get());
  }

  WeightShard& shard_;
};

// gate_up: rows 2*intermediate (gate/up pairs interleaved, so a range of
// intermediate columns is a range of row pairs). Experts split whole: a
// pointer offset; columns split: each expert's row range copied.
Mxfp4Experts shard_gate_up(const Mxfp4Experts& all, ShardRange experts, ShardRange columns, SliceCopier& copy) {
  const int64_t bpr = all.cols / kMxfp4BlockValues;
  const int64_t expert_rows = all.rows;
  Mxfp4Experts x;
  x.num_experts = experts.size();
  x.rows = 2 * columns.size();
  x.cols = all.cols;
  const int64_t e0 = experts.begin;
  const uint8_t* blocks = all.blocks + e0 * expert_rows * bpr * kMxfp4BlockBytes;
  const uint8_t* scales = all.scales + e0 * expert_rows * bpr;
  const bf16* bias = all.bias + e0 * expert_rows;
  // Viewed as [experts, rows * row bytes], the rank's rows are one column range.
  x.blocks = copy.columns(blocks, x.num_experts, expert_rows * bpr * kMxfp4BlockBytes,
                          2LL * columns.begin * bpr * kMxfp4BlockBytes, x.rows * bpr * kMxfp4BlockBytes);
  x.scales = copy.columns(scales, x.num_experts, expert_rows * bpr, 2LL * columns.begin * bpr, x.rows * bpr);
  x.bias = copy.columns(bias, x.num_experts, expert_rows, 2LL * columns.begin, x.rows);
  return x;
}

// down: rows hidden, cols intermediate; the rank's intermediate columns are
// whole MXFP4 blocks of every row. Its bias is added once: by rank 0 when the
// columns are split, by the expert's owner when experts are.
Mxfp4Experts shard_down(const Mxfp4Experts& all, ShardRange experts, ShardRange columns, bool holds_bias,
                        SliceCopier& copy) {
  const int64_t bpr = all.cols / kMxfp4BlockValues;
  const int64_t e0 = experts.begin;
  const int64_t b0 = columns.begin / kMxfp4BlockValues;
  const int64_t nb = columns.size() / kMxfp4BlockValues;
  Mxfp4Experts x;
  x.num_experts = experts.size();
  x.rows = all.rows;
  x.cols = columns.size();
  // Every held expert's rows back to back, each cut to the rank's blocks.
  const int64_t first_row = e0 * all.rows;
  const int64_t n_rows = static_cast<int64_t>(x.num_experts) * all.rows;
  x.blocks = copy.columns(all.blocks + first_row * bpr * kMxfp4BlockBytes, n_rows, bpr * kMxfp4BlockBytes,
                          b0 * kMxfp4BlockBytes, nb * kMxfp4BlockBytes);
  x.scales = copy.columns(all.scales + first_row * bpr, n_rows, bpr, b0, nb);
  x.bias = holds_bias ? all.bias + e0 * all.rows : nullptr;
  return x;
}

}  // namespace

WeightShard shard_weights(const Weights& w, const ModelConfig& c, const TensorParallelPlan& plan, int32_t rank) {
  if (rank < 0 || rank >= plan.world_size()) {
    throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "rank " + std::to_string(rank) + " outside tensor_parallel = " +
                                                 std::to_string(plan.world_size()));
  }
  WeightShard s;
  s.rank = rank;
  SliceCopier copy(s);
  const int64_t hidden = c.hidden_size;
  const ShardRange q = plan.q_heads(rank), kv = plan.kv_heads(rank);
  const int64_t q0 = static_cast<int64_t>(q.begin) * c.head_dim, kv0 = static_cast<int64_t>(kv.begin) * c.head_dim;
  const ShardRange experts = plan.experts(rank), columns = plan.intermediate(rank);
  const bool rank0 = rank == 0;

  s.embed_tokens = w.embed_tokens;
  s.final_norm = w.final_norm;
  s.lm_head = w.lm_head + static_cast<int64_t>(plan.vocab(rank).begin) * hidden;
  for (const LayerWeights& full : w.layers) {
    LayerWeights l = full;
    l.q_weight = full.q_weight + q0 * hidden;
    l.q_bias = full.q_bias + q0;
    l.k_weight = full.k_weight + kv0 * hidden;
    l.k_bias = full.k_bias + kv0;
    l.v_weight = full.v_weight + kv0 * hidden;
    l.v_bias = full.v_bias + kv0;
    l.o_weight = copy.columns(full.o_weight, hidden, c.q_dim(), q0, static_cast<int64_t>(q.size()) * c.head_dim);
    l.o_bias = rank0 ? full.o_bias : nullptr;
    l.sinks = full.sinks + q.begin;
    l.gate_up = shard_gate_up(full.gate_up, experts, columns, copy);
    l.down = shard_down(full.down, experts, columns, plan.moe() == MoeSharding::Experts || rank0, copy);
    s.layers.push_back(l);
  }
  return s;
}

}  // namespace gptoss
