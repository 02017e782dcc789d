// Tensor parallelism: which slice of every weight each rank holds, the one
// place both backends read it from (docs/cuda-notes.md, "Tensor parallel").
//
// Over `world_size` ranks:
// - attention by heads, GQA groups whole: rank r holds query heads and KV heads
//   [r*n/world, (r+1)*n/world), their QKV rows, biases and sinks; the output
//   projection by its input columns (the heads), so each rank ends with a
//   partial [tokens, hidden] sum (all-reduce #1). Its bias is on rank 0 only.
// - the router replicated (every rank routes every token the same way).
// - MoE in one of two layouts (MoeSharding), ending in all-reduce #2.
// - the unembedding by vocabulary rows; embedding and norms replicated.
// All-reduces sum the partials in rank order on every rank, so the residual
// stream every rank keeps is the same bits everywhere.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace gptoss {

enum class MoeSharding : uint8_t {
  // Every expert's intermediate columns split (gate/up rows, down columns):
  // each rank runs every routed expert on 1/world of its bytes.
  Intermediate = 0,
  // Experts split whole: rank r holds experts [r*E/world, (r+1)*E/world).
  Experts = 1,
};

// "intermediate" or "experts"; throws Error(INVALID_ARGUMENT) otherwise.
MoeSharding parse_moe_sharding(const std::string& name);
const char* moe_sharding_name(MoeSharding s);

// How device ranks sum their partials (the CPU backend sums in memory).
enum class TpAllReduce : uint8_t {
  // The one-shot peer kernel, fused with the residual add and the next norm.
  Peer = 0,
  // NCCL's all-reduce, then the residual add and norm as their own kernel:
  // the general path and the comparison (one device per rank, NCCL built in).
  Nccl = 1,
};

// "peer" or "nccl"; throws Error(INVALID_ARGUMENT) otherwise.
TpAllReduce parse_tp_all_reduce(const std::string& name);

// A half-open index range [begin, end).
struct ShardRange {
  int32_t begin = 0;
  int32_t end = 0;
  // constexpr: device code (the CUDA kernels) uses them too.
  constexpr int32_t size() const { return end - begin; }
  constexpr bool contains(int32_t i) const { return i >= begin && i < end; }
};

class TensorParallelPlan {
 public:
  // Checks that `config` divides over `world_size` ranks in `moe` layout:
  // KV heads (whole GQA groups), the expert count or the intermediate size in
  // whole MXFP4 blocks; throws Error(INVALID_ARGUMENT) naming the dimension.
  TensorParallelPlan(const ModelConfig& config, int32_t world_size, MoeSharding moe);

  int32_t world_size() const { return world_size_; }
  MoeSharding moe() const { return moe_; }

  ShardRange q_heads(int32_t rank) const { return even(config_.num_q_heads, rank); }
  ShardRange kv_heads(int32_t rank) const { return even(config_.num_kv_heads, rank); }
  // The intermediate columns of every expert a rank computes (all of them
  // when experts are split whole).
  ShardRange intermediate(int32_t rank) const;
  // The experts a rank holds (all of them when their columns are split).
  ShardRange experts(int32_t rank) const;
  // Vocabulary rows of the unembedding, as even as the vocabulary allows.
  ShardRange vocab(int32_t rank) const;

 private:
  ShardRange even(int32_t n, int32_t rank) const { return {n / world_size_ * rank, n / world_size_ * (rank + 1)}; }

  ModelConfig config_;
  int32_t world_size_;
  MoeSharding moe_;
};

// One rank's weights as LayerWeights views. A slice that is contiguous in the
// checkpoint (QKV rows, sinks, whole experts, vocabulary rows) points into
// its memory map; a strided one (output-projection columns, expert
// intermediate columns) is copied into `storage`. Dimensions of the views
// are the rank's: Mxfp4Experts rows/cols/num_experts are local, and a bias
// held by rank 0 only is null elsewhere. At world size 1 every view is the
// checkpoint's own tensor.
struct WeightShard {
  int32_t rank = 0;
  const bf16* embed_tokens = nullptr;  // [vocab, hidden], replicated
  const bf16* final_norm = nullptr;    // [hidden]
  const bf16* lm_head = nullptr;       // [plan.vocab(rank).size(), hidden]
  std::vector<LayerWeights> layers;
  std::vector<std::unique_ptr<uint8_t[]>> storage;
};

WeightShard shard_weights(const Weights& weights, const ModelConfig& config, const TensorParallelPlan& plan,
                          int32_t rank);

}  // namespace gptoss
