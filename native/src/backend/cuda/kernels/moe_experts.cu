// The MXFP4 expert products, dequantisation fused into both kernels.
//
// GEMV path (decode): each warp walks row pairs of one expert (for gate/up:
// the gate row and the up row of one SwiGLU output; for down: two output
// columns), holding a row pair in registers (16-byte loads, one MXFP4 block
// per lane) while the next one's loads are in flight, and applies it to the
// pairs routed to the expert (up to 8 staged at once), 1 or 4 at a time.
// Weights are read once per step up to 8 pairs an expert: every decode batch
// the GEMV serves.
//
// Tiled paths (large decode batches, prefill): tiles of 32 or 128 grouped
// pairs of one expert and 128 output columns. gemm_mxfp4_decoded.cuh decodes
// each weight tile once per block into shared memory (the default);
// GPTOSS_MOE_KERNEL=v1 selects gemm_tiled.cuh, each warp decoding its MXFP4
// fragment bytes straight into registers, kept only for an A/B on the GPU.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/device_math.cuh"
#include "backend/cuda/kernels/gemm_mxfp4_decoded.cuh"
#include "backend/cuda/kernels/gemm_tiled.cuh"
#include "backend/cuda/kernels/kernels.h"
#include "backend/cuda/kernels/sm_count.h"

namespace gptoss::cuda {
namespace {

constexpr float kSwigluAlpha = 1.702f;
constexpr int kGemvWarps = 8;
constexpr int kGemvBlocksPerSm = 2;  // the GEMV's __launch_bounds__ minimum, used to size its grid
// x rows the GEMV stages at once: decode batches of up to 8 (the GEMV's range:
// pairs <= experts) put at most 8 pairs on an expert.
constexpr int32_t kGemvStagedPairs = 8;
constexpr int kMaxBlocksPerLane = 4;    // MXFP4 blocks per lane: cols <= 4096
// The GEMV's "tiles" are whole experts: one list entry per expert with pairs.
constexpr int32_t kGemvTileRows = 1 << 24;


__device__ __forceinline__ float swiglu(float gate, float up, float limit) {
  const float g = fminf(gate, limit);
  const float u = fminf(fmaxf(up, -limit), limit);
  return (u + 1.0f) * (g / (1.0f + expf(-kSwigluAlpha * g)));
}

// Two adjacent weight rows of one expert as one lane holds them: its MXFP4
// blocks lane, lane + 32, ... (16 bytes each), their scales and the biases.
// For gate/up the two rows are the gate and up rows of one SwiGLU output; for
// down, two output columns.
template <int kBlocksPerLane>
struct RowPairSlice {
  uint4 q[2][kBlocksPerLane];
  float scale[2][kBlocksPerLane];
  float bias[2];

  __device__ __forceinline__ void load(const Mxfp4Experts& w, int32_t expert, int32_t pair,
                                       int lane, int32_t n_blocks) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t row = static_cast<int64_t>(expert) * w.rows + 2 * pair + r;
      bias[r] = bf16_bits_to_float(__ldg(w.bias + row));
#pragma unroll
      for (int i = 0; i < kBlocksPerLane; ++i) {
        const int32_t b = lane + i * kWarpSize;
        const bool ok = b < n_blocks;
        q[r][i] = ok ? __ldg(reinterpret_cast<const uint4*>(w.blocks + (row * n_blocks + b) * 16))
                     : make_uint4(0, 0, 0, 0);
        scale[r][i] = ok ? e8m0_value(__ldg(w.scales + row * n_blocks + b)) : 0.0f;
      }
    }
  }
};

// Staged x: the pair's values 2j and 2j + 1 of MXFP4 block b share one word
// (bf16 pairs), at [p / kPairs][j][b][p % kPairs]: lane b reads consecutive
// words (no bank conflicts) while it decodes block b, one word for two values
// (shared-memory bandwidth is what bounds the decode), and a group of kPairs
// pairs is one 16-byte read.
template <int kPairs>
__device__ __forceinline__ int32_t staged_index(int32_t p, int32_t j, int32_t b, int32_t n_blocks) {
  return (((p / kPairs) * 16 + j) * n_blocks + b) * kPairs + p % kPairs;
}

// Stages rows g0 .. g0 + n - 1 (n <= kGemvStagedPairs) of x. Each thread
// issues four 16-byte loads before its first store, so the staging costs a
// memory latency per 4 x 256 vectors (one at batch 1), not one per element.
template <int kPairs>
__device__ __forceinline__ void stage_pairs(const uint16_t* x, const int32_t* row_token, int32_t g0,
                                            int32_t n, int32_t cols, uint32_t* xs) {
  constexpr int kThreads = kGemvWarps * kWarpSize, kLoads = 4;
  const int32_t row_vectors = cols / 8, n_blocks = cols / 32, total = n * row_vectors;
  for (int32_t base = 0; base < total; base += kLoads * kThreads) {
    uint4 v[kLoads];
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int32_t id = base + threadIdx.x + i * kThreads, p = id / row_vectors;
      const int64_t src = id < total ? (row_token ? row_token[g0 + p] : g0 + p) : -1;
      v[i] = src >= 0 ? __ldg(reinterpret_cast<const uint4*>(x + src * cols) + id % row_vectors)
                      : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int32_t id = base + threadIdx.x + i * kThreads, p = id / row_vectors, c = id % row_vectors;
      if (id >= total) break;
      const uint32_t words[4] = {v[i].x, v[i].y, v[i].z, v[i].w};
#pragma unroll
      for (int j = 0; j < 4; ++j) xs[staged_index<kPairs>(p, (c % 4) * 4 + j, c / 4, n_blocks)] = words[j];
    }
  }
}

// Each warp walks its row pairs (pair = its global warp index, then every
// gridDim.x * kGemvWarps-th) and loads the next pair's weights before it
// decodes the current one, so every warp keeps a row pair's bytes in flight
// for the whole kernel; the grid is sized so that all SMs hold
// kGemvBlocksPerSm blocks with the same number of pairs each. Up to
// kGemvStagedPairs rows of x are staged at once and a row pair's weights,
// held in registers, are applied to all of them, kPairs at a time: a
// decode batch within the GEMV's range reads every weight once. Per pair and
// output, the sum runs in one fixed order (the block's 32 values, scaled once
// per block; blocks in lane order; the warp's lanes by warp_sum) whatever the
// number of pairs and chunks, so results do not depend on the batch. FP4
// codes become values through a 16-entry shared table.
template <bool kSwiglu, int kPairs, int kBlocksPerLane>
__global__ void __launch_bounds__(kGemvWarps * kWarpSize, kGemvBlocksPerSm)
    moe_gemv_kernel(const uint16_t* x, const int32_t* row_token, MoeGroups groups,
                    Mxfp4Experts w, float limit, void* out) {
  extern __shared__ float smem[];
  float* lut = smem;
  uint32_t* xs = reinterpret_cast<uint32_t*>(smem + 16);  // staged x, see staged_index
  const int lane = threadIdx.x % kWarpSize;
  // Blocks in y walk the experts that have pairs (the tile list of this path).
  if (static_cast<int32_t>(blockIdx.y) >= *groups.n_tiles) return;
  const int32_t expert = groups.tiles[blockIdx.y] >> 16;
  const int32_t g_begin = groups.expert_offsets[expert], g_end = groups.expert_offsets[expert + 1];
  const int32_t n_blocks = w.cols / 32, row_pairs = w.rows / 2;
  const int32_t first = blockIdx.x * kGemvWarps + threadIdx.x / kWarpSize;
  const int32_t stride = gridDim.x * kGemvWarps;
  if (threadIdx.x < 16) lut[threadIdx.x] = fp4_e2m1_value(threadIdx.x);

  RowPairSlice<kBlocksPerLane> cur{};
  if (first < row_pairs) cur.load(w, expert, first, lane, n_blocks);

  for (int32_t g0 = g_begin; g0 < g_end; g0 += kGemvStagedPairs) {
    const int32_t staged = min(kGemvStagedPairs, g_end - g0);
    __syncthreads();  // the previous rows are consumed (and the table is written)
    stage_pairs<kPairs>(x, row_token, g0, staged, w.cols, xs);
    __syncthreads();
    for (int32_t pair = first; pair < row_pairs; pair += stride) {
      // The next row pair: further on, else the first one again for the next
      // staged rows of x.
      const int32_t next = pair + stride < row_pairs         ? pair + stride
                           : g0 + kGemvStagedPairs < g_end ? first
                                                             : row_pairs;
      RowPairSlice<kBlocksPerLane> nxt{};
      if (next < row_pairs) nxt.load(w, expert, next, lane, n_blocks);

      // Groups of kPairs staged rows; a group's rows past `staged` are
      // computed from stale words and dropped.
      for (int32_t p0 = 0; p0 < staged; p0 += kPairs) {
        const uint32_t* xg = xs + staged_index<kPairs>(p0, 0, 0, n_blocks);
        float acc[2][kPairs] = {};
#pragma unroll
        for (int i = 0; i < kBlocksPerLane; ++i) {
          const int32_t b = lane + i * kWarpSize;
          if (b >= n_blocks) break;
          float part[2][kPairs] = {};
#pragma unroll 1
          for (int q = 0; q < 4; ++q) {  // rolled: unrolled, it keeps 128 loads in flight in registers
            uint32_t word[2];
#pragma unroll
            for (int r = 0; r < 2; ++r)
              word[r] = q == 0 ? cur.q[r][i].x : q == 1 ? cur.q[r][i].y : q == 2 ? cur.q[r][i].z : cur.q[r][i].w;
#pragma unroll
            for (int e2 = 0; e2 < 4; ++e2) {
              const uint32_t* xv = xg + ((q * 4 + e2) * n_blocks + b) * kPairs;
              uint32_t xw[kPairs];
              if constexpr (kPairs == 4) {
                const uint4 v4 = *reinterpret_cast<const uint4*>(xv);
                xw[0] = v4.x, xw[1] = v4.y, xw[2] = v4.z, xw[3] = v4.w;
              } else {
#pragma unroll
                for (int p = 0; p < kPairs; ++p) xw[p] = xv[p];
              }
#pragma unroll
              for (int h = 0; h < 2; ++h) {  // values 2 * e2 (low half) and 2 * e2 + 1
                const int e = 2 * e2 + h;
                float xp[kPairs];
#pragma unroll
                for (int p = 0; p < kPairs; ++p)
                  xp[p] = __uint_as_float(h == 0 ? xw[p] << 16 : xw[p] & 0xffff0000u);
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                  const float wv = lut[(word[r] >> (4 * e)) & 0xfu];
#pragma unroll
                  for (int p = 0; p < kPairs; ++p) part[r][p] = fmaf(wv, xp[p], part[r][p]);
                }
              }
            }
          }
#pragma unroll
          for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int p = 0; p < kPairs; ++p) acc[r][p] = fmaf(part[r][p], cur.scale[r][i], acc[r][p]);
        }
#pragma unroll
        for (int p = 0; p < kPairs; ++p) {
          if (p0 + p >= staged) break;
          const float v0 = warp_sum(acc[0][p]) + cur.bias[0], v1 = warp_sum(acc[1][p]) + cur.bias[1];
          if (lane != 0) continue;
          const int64_t g = g0 + p0 + p;
          if constexpr (kSwiglu) {
            static_cast<__nv_bfloat16*>(out)[g * row_pairs + pair] = __float2bfloat16_rn(swiglu(v0, v1, limit));
          } else {
            float* y = static_cast<float*>(out) + g * w.rows + 2 * pair;
            y[0] = v0, y[1] = v1;
          }
        }
      }
      cur = nxt;
    }
  }
}

struct SwigluEpilogue {
  __nv_bfloat16* act;  // [n_pairs, rows / 2]
  const uint16_t* bias;
  int32_t rows, g_begin, g_end;
  float limit;
  // Columns n (gate) and n + 1 (up) of one pair: SwiGLU output column n / 2.
  __device__ __forceinline__ void operator()(int r, int n, float gate, float up) const {
    const int32_t g = g_begin + r;
    if (g >= g_end || n >= rows) return;
    act[static_cast<int64_t>(g) * (rows / 2) + n / 2] = __float2bfloat16_rn(
        swiglu(gate + bf16_bits_to_float(bias[n]), up + bf16_bits_to_float(bias[n + 1]), limit));
  }
};

// One block per (column tile, expert tile); tiles past the step's count exit.
// kDecoded: the weight tile decoded once per block (gemm_mxfp4_decoded.cuh).
template <int kMi, bool kSwiglu, bool kDecoded>
__global__ void __launch_bounds__(tiled::kThreads, kDecoded ? 2 : 1)
    moe_tiled_kernel(const __nv_bfloat16* x, const int32_t* row_token, MoeGroups groups,
                     Mxfp4Experts w, float limit, void* out) {
  constexpr int kTileM = tiled::tile_m<kMi>();
  __shared__ int64_t row_src[kTileM];
  if (static_cast<int32_t>(blockIdx.y) >= *groups.n_tiles) return;
  const int32_t tile = groups.tiles[blockIdx.y];
  const int32_t expert = tile >> 16;
  const int32_t g_begin = groups.expert_offsets[expert] + (tile & 0xffff) * kTileM;
  const int32_t g_end = min(groups.expert_offsets[expert + 1], g_begin + kTileM);
  for (int r = threadIdx.x; r < kTileM; r += blockDim.x) {
    const int32_t g = g_begin + r;
    row_src[r] = g < g_end ? (row_token ? row_token[g] : g) : -1;
  }
  __syncthreads();
  const int64_t n_blocks = w.cols / 32;
  const tiled::Mxfp4Weights weights{w.blocks + static_cast<int64_t>(expert) * w.rows * n_blocks * 16,
                                    w.scales + static_cast<int64_t>(expert) * w.rows * n_blocks,
                                    w.rows, w.cols};
  const uint16_t* bias = w.bias + static_cast<int64_t>(expert) * w.rows;
  const int n0 = blockIdx.x * tiled::kTileN;
  auto product = [&](const auto& epilogue) {
    if constexpr (kDecoded)
      decoded::gemm_tile<kMi>(x, w.cols, row_src, g_end - g_begin, weights, n0, epilogue);
    else
      tiled::gemm_tile<kMi>(x, w.cols, row_src, weights, n0, w.cols, epilogue);
  };
  if constexpr (kSwiglu)
    product(SwigluEpilogue{static_cast<__nv_bfloat16*>(out), bias, w.rows, g_begin, g_end, limit});
  else
    product(tiled::BiasEpilogue{static_cast<float*>(out), bias, w.rows, g_begin, g_end});
}

// Read once: GPTOSS_MOE_KERNEL=v1 runs the per-warp-decode tiled kernel.
bool decoded_kernel_selected() {
  static const bool decoded = [] {
    const char* choice = std::getenv("GPTOSS_MOE_KERNEL");
    return choice == nullptr || std::strcmp(choice, "v1") != 0;
  }();
  return decoded;
}

template <int kMi, bool kSwiglu, bool kDecoded>
void launch_tiled_kernel(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
                         const Mxfp4Experts& w, float limit, void* out, cudaStream_t stream) {
  constexpr int kMaxSmem = kDecoded ? decoded::smem_bytes<kMi>(decoded::kMaxK)
                                    : tiled::smem_bytes<kMi, tiled::Mxfp4Weights>();
  static const bool configured = [] {
    GPTOSS_CUDA_CHECK(cudaFuncSetAttribute(moe_tiled_kernel<kMi, kSwiglu, kDecoded>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem));
    return true;
  }();
  (void)configured;
  const int smem = kDecoded ? decoded::smem_bytes<kMi>(w.cols) : kMaxSmem;
  const dim3 grid((w.rows + tiled::kTileN - 1) / tiled::kTileN,
                  moe_max_tiles(n_pairs, w.num_experts, tiled::tile_m<kMi>()));
  moe_tiled_kernel<kMi, kSwiglu, kDecoded><<<grid, tiled::kThreads, smem, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), row_token, groups, w, limit, out);
}

template <int kMi, bool kSwiglu>
void launch_tiled(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
                  const Mxfp4Experts& w, float limit, void* out, cudaStream_t stream) {
  if (decoded_kernel_selected())
    launch_tiled_kernel<kMi, kSwiglu, true>(x, row_token, groups, n_pairs, w, limit, out, stream);
  else
    launch_tiled_kernel<kMi, kSwiglu, false>(x, row_token, groups, n_pairs, w, limit, out, stream);
}

void check_experts(const Mxfp4Experts& w) {
  if (w.cols % 32 != 0 || w.cols > 32 * kWarpSize * kMaxBlocksPerLane || w.rows % 2 != 0)
    throw Error(GPTOSS_ERR_BACKEND, "MXFP4 experts: cols must be a multiple of 32 and <= 4096");
}

template <bool kSwiglu, int kPairs, int kBlocksPerLane>
void launch_gemv_kernel(dim3 grid, const bf16* x, const int32_t* row_token, const MoeGroups& groups,
                        const Mxfp4Experts& w, float limit, void* out, cudaStream_t stream) {
  constexpr auto kernel = moe_gemv_kernel<kSwiglu, kPairs, kBlocksPerLane>;
  static const bool configured = [] {
    constexpr int kMax = (16 + 16 * kWarpSize * kBlocksPerLane * kGemvStagedPairs) * sizeof(float);
    GPTOSS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMax));
    return true;
  }();
  (void)configured;
  const size_t smem = (16 + static_cast<size_t>(w.cols / 2) * kGemvStagedPairs) * sizeof(float);
  kernel<<<grid, kGemvWarps * kWarpSize, smem, stream>>>(x, row_token, groups, w, limit, out);
}

// One pair at a time when pairs are about one per expert (decode at small
// batches), else four sharing each decoded weight. The grid gives every warp
// the same number of row pairs and, when every expert in y has pairs (batch 1),
// fills each SM with kGemvBlocksPerSm blocks.
template <bool kSwiglu>
void launch_gemv(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
                 const Mxfp4Experts& w, float limit, void* out, cudaStream_t stream) {
  const int32_t experts = std::min(w.num_experts, n_pairs);
  const int32_t warp_groups = (w.rows / 2 + kGemvWarps - 1) / kGemvWarps;  // per expert
  const int32_t slots = kGemvBlocksPerSm * multiprocessor_count();
  const int32_t groups_per_block = (warp_groups * experts + slots - 1) / slots;
  const dim3 grid((warp_groups + groups_per_block - 1) / groups_per_block, experts);
  const bool single = n_pairs <= w.num_experts, narrow = w.cols <= 32 * kWarpSize * 3;
  if (single && narrow)
    launch_gemv_kernel<kSwiglu, 1, 3>(grid, x, row_token, groups, w, limit, out, stream);
  else if (single)
    launch_gemv_kernel<kSwiglu, 1, kMaxBlocksPerLane>(grid, x, row_token, groups, w, limit, out, stream);
  else if (narrow)
    launch_gemv_kernel<kSwiglu, 4, 3>(grid, x, row_token, groups, w, limit, out, stream);
  else
    launch_gemv_kernel<kSwiglu, 4, kMaxBlocksPerLane>(grid, x, row_token, groups, w, limit, out, stream);
}

template <bool kSwiglu>
void launch(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
            const Mxfp4Experts& w, float limit, MoePath path, void* out, cudaStream_t stream) {
  check_experts(w);
  if (n_pairs == 0) return;
  if (path == MoePath::Gemv) {
    launch_gemv<kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
  } else if (path == MoePath::TiledSmall) {
    launch_tiled<1, kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
  } else {
    launch_tiled<4, kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
  }
  GPTOSS_CUDA_CHECK_LAUNCH();
}

}  // namespace

MoePath moe_path_for(int32_t n_pairs, int32_t n_experts) {
  // Up to about one pair per expert the weight stream dominates and the GEMV
  // reads it at full bandwidth; beyond that its CUDA-core arithmetic does.
  // Small tiles until experts average 32 pairs (decode at 256 sequences),
  // then full tiles (measured: docs/PERFORMANCE.md).
  if (n_pairs <= n_experts) return MoePath::Gemv;
  return n_pairs <= 32 * n_experts ? MoePath::TiledSmall : MoePath::Tiled;
}

int32_t moe_tile_rows(MoePath path) {
  switch (path) {
    case MoePath::Gemv: return kGemvTileRows;
    case MoePath::TiledSmall: return tiled::tile_m<1>();
    case MoePath::Tiled: break;
  }
  return tiled::tile_m<4>();
}

void moe_gate_up_swiglu(const bf16* x, const MoeGroups& groups, int32_t n_pairs,
                        const Mxfp4Experts& w, float limit, MoePath path, bf16* act,
                        cudaStream_t stream) {
  launch<true>(x, groups.pair_token, groups, n_pairs, w, limit, path, act, stream);
}

void moe_down(const bf16* act, const MoeGroups& groups, int32_t n_pairs, const Mxfp4Experts& w,
              MoePath path, float* y, cudaStream_t stream) {
  launch<false>(act, nullptr, groups, n_pairs, w, 0.0f, path, y, stream);
}

}  // namespace gptoss::cuda
