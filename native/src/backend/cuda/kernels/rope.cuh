// RoPE (YaRN) of one q/k rotation pair and the store of k and v into the
// paged cache, shared by the rope kernel (prompt steps) and the QKV GEMV's
// fused epilogue (decode steps): both give the same bits.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/kernels/kernels.h"

namespace gptoss::cuda {

constexpr int kRopeHeadDim = 64;
constexpr int kRopePairs = kRopeHeadDim / 2;

struct RopeKvStore {
  float* qkv = nullptr;  // [n_tokens, (n_q_heads + 2 n_kv_heads) * 64]: q, k, v heads
  TokenPlacement tokens;
  const float* inv_freq = nullptr;
  float attention_factor = 1.0f;
  int32_t n_q_heads = 0;
  int32_t n_kv_heads = 0;
  KvLayerView kv;

  __device__ __forceinline__ int32_t width() const { return (n_q_heads + 2 * n_kv_heads) * kRopeHeadDim; }

  // Token t's slot in the layer's cache (element offset of its K row less k_offset).
  __device__ __forceinline__ int64_t slot(int32_t t) const {
    const int32_t pos = tokens.token_pos[t];
    const int32_t block =
        tokens.block_tables[static_cast<int64_t>(tokens.token_chunk[t]) * tokens.max_blocks + pos / kv.block_size];
    return block * kv.block_stride + static_cast<int64_t>(pos % kv.block_size) * kv.kv_dim;
  }

  // Columns `pair` and `pair + 32` of head `head` of token t (values a, b):
  // q and k heads rotated by the angle pos * inv_freq[pair] (cos and sin
  // times attention_factor) and written back to the qkv row, k and v heads
  // also stored into the cache slot as bf16.
  __device__ __forceinline__ void store_pair(int32_t t, int32_t pos, int64_t slot, int32_t head, int32_t pair,
                                             float a, float b) const {
    float* h = qkv + static_cast<int64_t>(t) * width() + head * kRopeHeadDim;
    if (head < n_q_heads + n_kv_heads) {
      const float angle = static_cast<float>(pos) * inv_freq[pair];
      const float c = cosf(angle) * attention_factor, s = sinf(angle) * attention_factor;
      const float a2 = a * c - b * s, b2 = b * c + a * s;
      a = a2, b = b2;
    }
    h[pair] = a;
    h[pair + kRopePairs] = b;
    if (head < n_q_heads) return;
    const bool is_k = head < n_q_heads + n_kv_heads;
    const int32_t d = (head - n_q_heads - (is_k ? 0 : n_kv_heads)) * kRopeHeadDim + pair;
    uint16_t* cache = kv.pool + slot + (is_k ? kv.k_offset : kv.v_offset);
    cache[d] = __bfloat16_as_ushort(__float2bfloat16_rn(a));
    cache[d + kRopePairs] = __bfloat16_as_ushort(__float2bfloat16_rn(b));
  }
};

// Checks the shape (head_dim 64) and bundles the arguments of
// rope_and_store_kv (kernels.h).
RopeKvStore rope_kv_store(float* qkv, const TokenPlacement& tokens, const float* inv_freq, float attention_factor,
                          int32_t n_q_heads, int32_t n_kv_heads, const KvLayerView& kv);

}  // namespace gptoss::cuda
