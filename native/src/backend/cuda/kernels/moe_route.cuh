// The MoE routing of a block's rows, shared by moe_route's kernel and the
// router GEMV that routes in its last block (router_and_route): the top-k of
// each row's logits by one warp, then the grouping of the pairs by the
// whole block. Deterministic: results never depend on thread timing.
#pragma once

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/device_math.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace gptoss::cuda {

constexpr int kMaxExperts = 128;
constexpr int kMaxExpertsPerLane = kMaxExperts / kWarpSize;
constexpr int kMaxTopK = 8;

// The top-k of one row by one warp; lane l holds experts l, l + 32, ...
__device__ __forceinline__ void warp_top_k(const float* row_logits, int32_t n_experts, int32_t k,
                                           int32_t* row_experts, float* row_weights, int lane) {
  float v[kMaxExpertsPerLane];
#pragma unroll
  for (int i = 0; i < kMaxExpertsPerLane; ++i) {
    const int32_t e = lane + i * kWarpSize;
    v[i] = e < n_experts ? __ldcg(row_logits + e) : -INFINITY;  // past L1: maybe another block's output
  }
  float chosen[kMaxTopK];
  int32_t chosen_id[kMaxTopK];
  for (int j = 0; j < k; ++j) {
    float best = -INFINITY;
    int32_t best_id = INT32_MAX;
#pragma unroll
    for (int i = 0; i < kMaxExpertsPerLane; ++i) {
      const int32_t e = lane + i * kWarpSize;
      if (e < n_experts && (v[i] > best || (v[i] == best && e < best_id))) best = v[i], best_id = e;
    }
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, offset);
      const int32_t oid = __shfl_xor_sync(0xffffffffu, best_id, offset);
      if (ob > best || (ob == best && oid < best_id)) best = ob, best_id = oid;
    }
    chosen[j] = best;
    chosen_id[j] = best_id;
#pragma unroll
    for (int i = 0; i < kMaxExpertsPerLane; ++i)
      if (lane + i * kWarpSize == best_id) v[i] = -INFINITY;
  }
  if (lane == 0) {
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += expf(chosen[j] - chosen[0]);
    for (int j = 0; j < k; ++j) {
      row_experts[j] = chosen_id[j];
      row_weights[j] = expf(chosen[j] - chosen[0]) / sum;
    }
  }
}

// Groups the pairs, run by one whole block. Counts pairs per expert, lays
// the experts out in order, then each warp places the pairs of its experts
// by scanning all pairs in order (ballot + popcount gives each pair its rank
// among its expert's pairs).
// Pairs go to buckets: the held experts' local ids, then one bucket for the
// pairs of experts held elsewhere (none when every expert is held).
__device__ __forceinline__ void block_group(const int32_t* experts, int32_t n_pairs, int32_t k, int32_t n_experts,
                                            int32_t tile_rows, const MoeGroups& groups) {
  __shared__ int32_t count[kMaxExperts + 1];
  __shared__ int32_t offset[kMaxExperts + 2];
  const ShardRange held = groups.held_of(n_experts);
  const int32_t n_held = held.size();
  const int32_t n_buckets = n_held + (n_held < n_experts ? 1 : 0);
  auto bucket = [&](int32_t e) { return held.contains(e) ? e - held.begin : n_held; };
  for (int e = threadIdx.x; e < n_buckets; e += blockDim.x) count[e] = 0;
  __syncthreads();
  for (int32_t i = threadIdx.x; i < n_pairs; i += blockDim.x) atomicAdd(&count[bucket(experts[i])], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t total = 0, n_tiles = 0;
    for (int e = 0; e < n_buckets; ++e) {
      offset[e] = total;
      groups.expert_offsets[e] = total;
      total += count[e];
      if (e < n_held)
        for (int32_t t = 0; t * tile_rows < count[e]; ++t) groups.tiles[n_tiles++] = (e << 16) | t;
    }
    offset[n_buckets] = total;
    groups.expert_offsets[n_buckets] = total;
    *groups.n_tiles = n_tiles;
  }
  __syncthreads();
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  for (int e = warp; e < n_buckets; e += blockDim.x / kWarpSize) {
    int32_t placed = offset[e];
    for (int32_t base = 0; base < n_pairs; base += kWarpSize) {
      const int32_t i = base + lane;
      const bool mine = i < n_pairs && bucket(experts[i]) == e;
      const uint32_t ballot = __ballot_sync(0xffffffffu, mine);
      if (mine) {
        const int32_t g = placed + __popc(ballot & ((1u << lane) - 1u));
        groups.pair_token[g] = i / k;
        groups.pair_slot[i] = g;
      }
      placed += __popc(ballot);
    }
  }
}

// Routes rows 0 .. n_rows - 1 (warp w: rows w, w + warps, ...), then groups
// their pairs; every thread of the block calls it.
__device__ __forceinline__ void route_rows(const float* logits, int32_t n_rows, int32_t n_experts, int32_t k,
                                          int32_t tile_rows, int32_t* experts, float* weights,
                                          const MoeGroups& groups) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  for (int32_t row = warp; row < n_rows; row += blockDim.x / kWarpSize)
    warp_top_k(logits + static_cast<int64_t>(row) * n_experts, n_experts, k, experts + static_cast<int64_t>(row) * k,
               weights + static_cast<int64_t>(row) * k, lane);
  __syncthreads();
  block_group(experts, n_rows * k, k, n_experts, tile_rows, groups);
}

inline void check_routing_shape(int32_t n_experts, int32_t k, const MoeGroups& groups) {
  if (n_experts > kMaxExperts || k > kMaxTopK || k > n_experts)
    throw Error(GPTOSS_ERR_BACKEND, "MoE routing: at most 128 experts and top-8");
  const ShardRange held = groups.held_of(n_experts);
  if (held.begin < 0 || held.size() <= 0) throw Error(GPTOSS_ERR_BACKEND, "MoE routing: no held experts");
}

}  // namespace gptoss::cuda
