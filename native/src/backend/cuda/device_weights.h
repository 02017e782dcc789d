// DeviceWeights: every tensor of the model in one device allocation, in the
// checkpoint's formats (bf16, MXFP4), with q/k/v fused into one projection.
// Filled either from a loaded checkpoint (or one tensor-parallel rank's shard
// of it) or with deterministic pseudo-random values generated on the GPU
// (full-size benchmarks without a 13 GB file).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "backend/cuda/device_buffer.h"
#include "backend/cuda/kernels/kernels.h"
#include "model/config.h"
#include "model/tensor_parallel.h"
#include "model/weights.h"

namespace gptoss::cuda {

// The dimensions of the slice of the model one tensor-parallel rank holds
// (model/tensor_parallel.h), the whole model at TP=1. Only the intermediate
// layout of the MoE is run on the device: every rank holds every expert.
struct RankShape {
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t intermediate = 0;  // columns of every expert
  ShardRange experts;        // the experts held (global ids)
  ShardRange vocab;          // rows of the unembedding

  static RankShape whole(const ModelConfig& config);
  static RankShape of(const TensorParallelPlan& plan, int32_t rank);
};

struct DeviceLayer {
  const bf16* input_norm = nullptr;   // [hidden]
  const bf16* qkv_weight = nullptr;   // [q_dim + 2 kv_dim, hidden]: q rows, k rows, v rows
  const bf16* qkv_bias = nullptr;     // [q_dim + 2 kv_dim]
  const bf16* o_weight = nullptr;     // [hidden, q_dim]
  const bf16* o_bias = nullptr;       // [hidden]
  const bf16* sinks = nullptr;        // [num_q_heads]
  const bf16* post_norm = nullptr;    // [hidden]
  const bf16* router_weight = nullptr;  // [num_experts, hidden]
  const bf16* router_bias = nullptr;    // [num_experts]
  Mxfp4Experts gate_up;               // rows 2 * intermediate, cols hidden
  Mxfp4Experts down;                  // rows hidden, cols intermediate
};

class DeviceWeights {
 public:
  // Copies a rank's shard of a checkpoint (shard_weights; at TP=1 the
  // checkpoint's own tensors) to the current device. A bias the shard does
  // not hold (rank > 0's output-projection and down biases) is zeros, so
  // every rank runs the same kernels.
  static DeviceWeights upload(const WeightShard& host, const ModelConfig& config, const RankShape& shape);
  // Pseudo-random weights of `config`'s shape, a pure function of `seed`.
  static DeviceWeights random(const ModelConfig& config, uint64_t seed);

  const bf16* embed_tokens = nullptr;  // [vocab, hidden]
  const bf16* final_norm = nullptr;    // [hidden]
  const bf16* lm_head = nullptr;       // [shape vocab rows, hidden]
  std::vector<DeviceLayer> layers;     // heads, experts' columns: the shape's

  uint64_t bytes() const { return arena_.bytes(); }

 private:
  DeviceWeights(const ModelConfig& config, const RankShape& shape);
  DeviceBuffer<uint8_t> arena_;
};

}  // namespace gptoss::cuda
