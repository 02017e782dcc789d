// Weights: typed, validated views of every tensor of a gpt-oss checkpoint.
// The views point into the checkpoint's memory maps; the checkpoint object
// must outlive them (load_weights keeps it inside Weights).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "model/config.h"
#include "model/mxfp4.h"
#include "model/safetensors.h"

namespace gptoss {

// All experts of one projection: blocks [E, rows, cols/32, 16], scales
// [E, rows, cols/32], bias bf16 [E, rows] or null (a tensor-parallel shard
// whose bias another rank adds).
struct Mxfp4Experts {
  const uint8_t* blocks = nullptr;
  const uint8_t* scales = nullptr;
  const bf16* bias = nullptr;
  int32_t num_experts = 0;
  int32_t rows = 0;
  int32_t cols = 0;

  Mxfp4Matrix expert(int32_t e) const;
  const bf16* expert_bias(int32_t e) const { return bias ? bias + static_cast<int64_t>(e) * rows : nullptr; }
};

struct LayerWeights {
  const bf16* input_norm = nullptr;      // [hidden]
  const bf16* q_weight = nullptr;        // [q_dim, hidden]
  const bf16* q_bias = nullptr;          // [q_dim]
  const bf16* k_weight = nullptr;        // [kv_dim, hidden]
  const bf16* k_bias = nullptr;
  const bf16* v_weight = nullptr;        // [kv_dim, hidden]
  const bf16* v_bias = nullptr;
  const bf16* o_weight = nullptr;        // [hidden, q_dim]
  const bf16* o_bias = nullptr;          // [hidden]
  const bf16* sinks = nullptr;           // [num_q_heads]
  const bf16* post_attention_norm = nullptr;  // [hidden]
  const bf16* router_weight = nullptr;   // [num_experts, hidden]
  const bf16* router_bias = nullptr;     // [num_experts]
  Mxfp4Experts gate_up;                  // rows 2*intermediate (gate even, up odd), cols hidden
  Mxfp4Experts down;                     // rows hidden, cols intermediate
};

struct Weights {
  std::unique_ptr<SafetensorsCheckpoint> checkpoint;
  const bf16* embed_tokens = nullptr;  // [vocab, hidden]
  const bf16* final_norm = nullptr;    // [hidden]
  const bf16* lm_head = nullptr;       // [vocab, hidden]
  std::vector<LayerWeights> layers;
};

// Opens the checkpoint in `dir` and checks every tensor gpt-oss needs for
// presence, dtype and shape against `config`; throws gptoss::Error
// (GPTOSS_ERR_MODEL) naming the first tensor at fault.
Weights load_weights(const std::string& dir, const ModelConfig& config);

}  // namespace gptoss
