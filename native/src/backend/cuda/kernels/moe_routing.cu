// MoE routing: top-k of the router logits, grouping of token/expert pairs by
// expert (deterministic order, so results never depend on thread timing),
// and the weighted combine of the experts' outputs.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/device_math.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace gptoss::cuda {
namespace {

constexpr int kMaxExperts = 128;
constexpr int kMaxExpertsPerLane = kMaxExperts / kWarpSize;
constexpr int kMaxTopK = 8;

constexpr int32_t kFusedRouteRows = 64;  // moe_route: one block routes and groups up to this many rows
constexpr int kGroupThreads = 1024;

// The top-k of one row by one warp; lane l holds experts l, l + 32, ...
__device__ void warp_top_k(const float* row_logits, int32_t n_experts, int32_t k, int32_t* row_experts,
                           float* row_weights, int lane) {
  float v[kMaxExpertsPerLane];
#pragma unroll
  for (int i = 0; i < kMaxExpertsPerLane; ++i) {
    const int32_t e = lane + i * kWarpSize;
    v[i] = e < n_experts ? row_logits[e] : -INFINITY;
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
__device__ void block_group(const int32_t* experts, int32_t n_pairs, int32_t k, int32_t n_experts,
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

// One warp per row.
__global__ void router_top_k_kernel(const float* logits, int32_t n_rows, int32_t n_experts,
                                    int32_t k, int32_t* experts, float* weights) {
  const int32_t row = blockIdx.x * (blockDim.x / kWarpSize) + threadIdx.x / kWarpSize;
  if (row >= n_rows) return;
  warp_top_k(logits + static_cast<int64_t>(row) * n_experts, n_experts, k, experts + static_cast<int64_t>(row) * k,
             weights + static_cast<int64_t>(row) * k, threadIdx.x % kWarpSize);
}

__global__ void __launch_bounds__(kGroupThreads)
    moe_group_kernel(const int32_t* experts, int32_t n_pairs, int32_t k, int32_t n_experts,
                     int32_t tile_rows, MoeGroups groups) {
  block_group(experts, n_pairs, k, n_experts, tile_rows, groups);
}

// Both in one block (decode batches): warp w routes rows w, w + 32, ...;
// the block's barrier makes their choices visible to the grouping.
__global__ void __launch_bounds__(kGroupThreads)
    moe_route_kernel(const float* logits, int32_t n_rows, int32_t n_experts, int32_t k, int32_t tile_rows,
                     int32_t* experts, float* weights, MoeGroups groups) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  for (int32_t row = warp; row < n_rows; row += kGroupThreads / kWarpSize)
    warp_top_k(logits + static_cast<int64_t>(row) * n_experts, n_experts, k, experts + static_cast<int64_t>(row) * k,
               weights + static_cast<int64_t>(row) * k, lane);
  __syncthreads();
  block_group(experts, n_rows * k, k, n_experts, tile_rows, groups);
}

__global__ void moe_combine_kernel(const float* y, const int32_t* pair_slot, const float* weights,
                                   const int32_t* held_pairs, int32_t k, int32_t dim, float* delta) {
  const int32_t t = blockIdx.x;
  const int32_t held_end = held_pairs ? *held_pairs : INT32_MAX;
  for (int32_t d = threadIdx.x * 4; d < dim; d += blockDim.x * 4) {
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int j = 0; j < k; ++j) {
      const int32_t g = pair_slot[static_cast<int64_t>(t) * k + j];
      if (g >= held_end) continue;  // an expert another rank holds
      const float w = weights[static_cast<int64_t>(t) * k + j];
      const float4 v = *reinterpret_cast<const float4*>(y + static_cast<int64_t>(g) * dim + d);
      sum.x = fmaf(w, v.x, sum.x), sum.y = fmaf(w, v.y, sum.y);
      sum.z = fmaf(w, v.z, sum.z), sum.w = fmaf(w, v.w, sum.w);
    }
    *reinterpret_cast<float4*>(delta + static_cast<int64_t>(t) * dim + d) = sum;
  }
}

void check_routing_shape(int32_t n_experts, int32_t k, const MoeGroups& groups) {
  if (n_experts > kMaxExperts || k > kMaxTopK || k > n_experts)
    throw Error(GPTOSS_ERR_BACKEND, "MoE routing: at most 128 experts and top-8");
  const ShardRange held = groups.held_of(n_experts);
  if (held.begin < 0 || held.size() <= 0) throw Error(GPTOSS_ERR_BACKEND, "MoE routing: no held experts");
}

}  // namespace

void router_top_k(const float* logits, int32_t n_rows, int32_t n_experts, int32_t k,
                  int32_t* experts, float* weights, cudaStream_t stream) {
  check_routing_shape(n_experts, k, MoeGroups{});
  if (n_rows == 0) return;
  router_top_k_kernel<<<(n_rows + 7) / 8, 256, 0, stream>>>(logits, n_rows, n_experts, k, experts,
                                                            weights);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

void moe_group(const int32_t* experts, int32_t n_rows, int32_t k, int32_t n_experts,
               int32_t tile_rows, const MoeGroups& groups, cudaStream_t stream) {
  check_routing_shape(n_experts, k, groups);
  moe_group_kernel<<<1, kGroupThreads, 0, stream>>>(experts, n_rows * k, k, n_experts, tile_rows, groups);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

void moe_route(const float* logits, int32_t n_rows, int32_t n_experts, int32_t k, int32_t tile_rows,
               int32_t* experts, float* weights, const MoeGroups& groups, cudaStream_t stream) {
  if (n_rows > kFusedRouteRows) {
    router_top_k(logits, n_rows, n_experts, k, experts, weights, stream);
    moe_group(experts, n_rows, k, n_experts, tile_rows, groups, stream);
    return;
  }
  check_routing_shape(n_experts, k, groups);
  moe_route_kernel<<<1, kGroupThreads, 0, stream>>>(logits, n_rows, n_experts, k, tile_rows, experts, weights,
                                                    groups);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

void moe_combine(const float* y, const int32_t* pair_slot, const float* weights, const int32_t* held_pairs,
                 int32_t n_rows, int32_t k, int32_t dim, float* delta, cudaStream_t stream) {
  if (dim % 4 != 0) throw Error(GPTOSS_ERR_BACKEND, "moe_combine: dim must be a multiple of 4");
  if (n_rows == 0) return;
  moe_combine_kernel<<<n_rows, 256, 0, stream>>>(y, pair_slot, weights, held_pairs, k, dim, delta);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

}  // namespace gptoss::cuda
