// The MXFP4 expert products, dequantisation fused into every kernel.
//
// Streamed path (decode from 2 sequences, short extends: up to 32 pairs an
// expert): weights streamed into registers, tokens in shared memory, tensor
// cores (gemm_mxfp4_streamed.cuh).
//
// GEMV path (decode of one sequence): each warp walks row
// pairs of one expert (for gate/up:
// the gate row and the up row of one SwiGLU output; for down: two output
// columns), holding a row pair in registers (16-byte loads, one MXFP4 block
// per lane) while the next one's loads are in flight, and applies it to the
// pairs routed to the expert (up to 8 staged at once), 1 or 4 at a time.
//
// Tiled path (prefill, decode beyond 32 pairs an expert): tiles of 128
// grouped pairs of one expert and 128 (or 256) output columns, each weight
// tile decoded once per block into shared memory, then mma.sync
// (gemm_mxfp4_decoded.cuh) or the warpgroup MMA (gemm_mxfp4_wgmma.cuh), or
// into the warpgroup MMA's register operand (gemm_mxfp4_wgmma_regs.cuh):
// GPTOSS_TILED, see tiled_kernel.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/dependent_launch.cuh"
#include "backend/cuda/kernels/device_math.cuh"
#include "backend/cuda/kernels/gemm_mxfp4_decoded.cuh"
#include "backend/cuda/kernels/gemm_mxfp4_streamed.cuh"
#include "backend/cuda/kernels/gemm_mxfp4_wgmma.cuh"
#include "backend/cuda/kernels/gemm_mxfp4_wgmma_regs.cuh"
#include "backend/cuda/kernels/kernels.h"
#include "backend/cuda/kernels/sm_count.h"

namespace gptoss::cuda {
namespace {

constexpr float kSwigluAlpha = 1.702f;
constexpr int kGemvWarps = 8;
constexpr int kGemvBlocksPerSm = 2;  // the GEMV's __launch_bounds__ minimum, used to size its grid
// x rows the GEMV stages at once: 8 pairs an expert, more than its one-token
// steps need, so that GPTOSS_MOE_KERNEL=gemv serves any step.
constexpr int32_t kGemvStagedPairs = 8;
// Pairs of a one-token step (gpt-oss: top-4): the most the GEMV applies one at
// a time, and the expert count its one-wave grid is sized for.
constexpr int32_t kGemvOneTokenPairs = 4;
constexpr int kMaxBlocksPerLane = 4;    // MXFP4 blocks per lane: cols <= 4096
// The GEMV's "tiles" are whole experts: one list entry per expert with pairs.
constexpr int32_t kGemvTileRows = 1 << 24;


__device__ __forceinline__ float swiglu(float gate, float up, float limit) {
  const float g = fminf(gate, limit);
  const float u = fminf(fmaxf(up, -limit), limit);
  return (u + 1.0f) * (g / (1.0f + expf(-kSwigluAlpha * g)));
}

// The GEMV path's tile list has one entry per expert with pairs, all its
// grouped pairs [begin, end); blocks in y past the step's count get false.
struct ExpertPairs {
  int32_t expert, begin, end;
};
__device__ __forceinline__ bool gemv_expert_pairs(const MoeGroups& groups, ExpertPairs& out) {
  if (static_cast<int32_t>(blockIdx.y) >= *groups.n_tiles) return false;
  out.expert = groups.tiles[blockIdx.y] >> 16;
  out.begin = groups.expert_offsets[out.expert], out.end = groups.expert_offsets[out.expert + 1];
  return true;
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

// Pairs p0 .. p0 + kN - 1 of the staged rows (stored in groups of kLayout,
// see staged_index) times the row pair the warp holds: per pair and output,
// the block's 32 values, scaled once per block; blocks in lane order; the
// warp's lanes by warp_sum. The same order for any kN, so a pair's result
// does not depend on how many pairs share the pass. Pairs of the group past
// `n` are computed from stale words and not stored.
template <bool kSwiglu, int kN, int kLayout, int kBlocksPerLane>
__device__ __forceinline__ void apply_row_pair(const RowPairSlice<kBlocksPerLane>& cur, const uint32_t* xs,
                                               const float* lut, int32_t p0, int32_t n, int32_t g0, int32_t pair,
                                               int lane, int32_t n_blocks, int32_t rows, float limit, void* out) {
  const uint32_t* xg = xs + staged_index<kLayout>(p0, 0, 0, n_blocks);
  float acc[2][kN] = {};
#pragma unroll
  for (int i = 0; i < kBlocksPerLane; ++i) {
    const int32_t b = lane + i * kWarpSize;
    if (b >= n_blocks) break;
    float part[2][kN] = {};
#pragma unroll 1
    for (int q = 0; q < 4; ++q) {  // rolled: unrolled, it keeps 128 loads in flight in registers
      uint32_t word[2];
#pragma unroll
      for (int r = 0; r < 2; ++r)
        word[r] = q == 0 ? cur.q[r][i].x : q == 1 ? cur.q[r][i].y : q == 2 ? cur.q[r][i].z : cur.q[r][i].w;
#pragma unroll
      for (int e2 = 0; e2 < 4; ++e2) {
        const uint32_t* xv = xg + ((q * 4 + e2) * n_blocks + b) * kLayout;
        uint32_t xw[kN];
        if constexpr (kN == 4) {
          const uint4 v4 = *reinterpret_cast<const uint4*>(xv);
          xw[0] = v4.x, xw[1] = v4.y, xw[2] = v4.z, xw[3] = v4.w;
        } else {
#pragma unroll
          for (int p = 0; p < kN; ++p) xw[p] = xv[p];
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {  // values 2 * e2 (low half) and 2 * e2 + 1
          const int e = 2 * e2 + h;
          float xp[kN];
#pragma unroll
          for (int p = 0; p < kN; ++p) xp[p] = __uint_as_float(h == 0 ? xw[p] << 16 : xw[p] & 0xffff0000u);
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const float wv = lut[(word[r] >> (4 * e)) & 0xfu];
#pragma unroll
            for (int p = 0; p < kN; ++p) part[r][p] = fmaf(wv, xp[p], part[r][p]);
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int p = 0; p < kN; ++p) acc[r][p] = fmaf(part[r][p], cur.scale[r][i], acc[r][p]);
  }
#pragma unroll
  for (int p = 0; p < kN; ++p) {
    if (p >= n) break;
    const float v0 = warp_sum(acc[0][p]) + cur.bias[0], v1 = warp_sum(acc[1][p]) + cur.bias[1];
    if (lane != 0) continue;
    const int64_t g = g0 + p0 + p;
    if constexpr (kSwiglu) {
      static_cast<__nv_bfloat16*>(out)[g * (rows / 2) + pair] = __float2bfloat16_rn(swiglu(v0, v1, limit));
    } else {
      float* y = static_cast<float*>(out) + g * rows + 2 * pair;
      y[0] = v0, y[1] = v1;
    }
  }
}

// Each warp walks its row pairs (pair = its global warp index, then every
// gridDim.x * kGemvWarps-th) and loads the next pair's weights before it
// decodes the current one, so every warp keeps a row pair's bytes in flight
// for the whole kernel. Up to kGemvStagedPairs rows of x are staged at once
// and a row pair's weights, held in registers, are applied to all of them,
// kLayout at a time (a lone last pair of a group of 4 alone: four at a time
// costs about twice the arithmetic of one): a decode batch within the GEMV's
// range reads every weight once. FP4 codes become values through a 16-entry
// shared table.
template <bool kSwiglu, int kLayout, int kBlocksPerLane>
__global__ void __launch_bounds__(kGemvWarps * kWarpSize, kGemvBlocksPerSm)
    moe_gemv_kernel(const uint16_t* x, const int32_t* row_token, MoeGroups groups,
                    Mxfp4Experts w, float limit, void* out) {
  extern __shared__ float smem[];
  float* lut = smem;
  uint32_t* xs = reinterpret_cast<uint32_t*>(smem + 16);  // staged x, see staged_index
  const int lane = threadIdx.x % kWarpSize;
  // launch_dependent: the gate/up product follows the routing that wrote the
  // grouping; the down product follows the gate/up product, the grouping is
  // older, so its first weights are loaded before the wait.
  if constexpr (kSwiglu) {
    wait_for_previous_kernel();
    allow_next_kernel();
  }
  // Blocks in y walk the experts that have pairs.
  ExpertPairs pairs;
  if (!gemv_expert_pairs(groups, pairs)) return;
  const int32_t expert = pairs.expert, g_begin = pairs.begin, g_end = pairs.end;
  const int32_t n_blocks = w.cols / 32, row_pairs = w.rows / 2;
  const int32_t first = blockIdx.x * kGemvWarps + threadIdx.x / kWarpSize;
  const int32_t stride = gridDim.x * kGemvWarps;
  if (threadIdx.x < 16) lut[threadIdx.x] = fp4_e2m1_value(threadIdx.x);

  RowPairSlice<kBlocksPerLane> cur{};
  if (first < row_pairs) cur.load(w, expert, first, lane, n_blocks);
  if constexpr (!kSwiglu) {
    wait_for_previous_kernel();
    allow_next_kernel();
  }

  for (int32_t g0 = g_begin; g0 < g_end; g0 += kGemvStagedPairs) {
    const int32_t staged = min(kGemvStagedPairs, g_end - g0);
    __syncthreads();  // the previous rows are consumed (and the table is written)
    stage_pairs<kLayout>(x, row_token, g0, staged, w.cols, xs);
    __syncthreads();
    for (int32_t pair = first; pair < row_pairs; pair += stride) {
      // The next row pair: further on, else the first one again for the next
      // staged rows of x.
      const int32_t next = pair + stride < row_pairs         ? pair + stride
                           : g0 + kGemvStagedPairs < g_end ? first
                                                             : row_pairs;
      RowPairSlice<kBlocksPerLane> nxt{};
      if (next < row_pairs) nxt.load(w, expert, next, lane, n_blocks);
      for (int32_t p0 = 0; p0 < staged; p0 += kLayout) {
        const int32_t n = min(kLayout, staged - p0);
        if (n == 1)
          apply_row_pair<kSwiglu, 1, kLayout>(cur, xs, lut, p0, n, g0, pair, lane, n_blocks, w.rows, limit, out);
        else
          apply_row_pair<kSwiglu, kLayout, kLayout>(cur, xs, lut, p0, n, g0, pair, lane, n_blocks, w.rows, limit,
                                                    out);
      }
      cur = nxt;
    }
  }
}

// One expert's slice of all experts' MXFP4 weights.
__device__ __forceinline__ decoded::Mxfp4Weights expert_weights(const Mxfp4Experts& w, int32_t expert) {
  const int64_t n_blocks = w.cols / 32, first_row = static_cast<int64_t>(expert) * w.rows;
  return {w.blocks + first_row * n_blocks * 16, w.scales + first_row * n_blocks, w.rows, w.cols};
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

// The tiled kernels' column tiles: the shape, the shared memory a block
// needs and its product (decoded::gemm_tile's contract).
struct MmaTile {
  static constexpr int kN = decoded::kTileN, kBlocksPerSm = 2;
  static constexpr int smem_bytes(int k) { return decoded::smem_bytes<4>(k); }
  template <typename Epilogue>
  __device__ static void run(const __nv_bfloat16* a, int64_t lda, const int64_t* row_src, int valid_rows,
                             const decoded::Mxfp4Weights& w, int n0, const Epilogue& epilogue) {
    decoded::gemm_tile<4>(a, lda, row_src, valid_rows, w, n0, epilogue);
  }
};
template <int kColumns>
struct WgmmaTile {
  static constexpr int kN = kColumns, kBlocksPerSm = wgmma::Pipeline<kN>::kBlocksPerSm;
  static constexpr int smem_bytes(int k) { return wgmma::smem_bytes<kN>(k); }
  template <typename Epilogue>
  __device__ static void run(const __nv_bfloat16* a, int64_t lda, const int64_t* row_src, int valid_rows,
                             const decoded::Mxfp4Weights& w, int n0, const Epilogue& epilogue) {
    wgmma::gemm_tile<kN>(a, lda, row_src, valid_rows, w, n0, epilogue);
  }
};
struct WgmmaRegsTile {
  static constexpr int kN = wgmma::regs::kTileN, kBlocksPerSm = 2;
  static constexpr int smem_bytes(int k) { return wgmma::regs::smem_bytes(k); }
  template <typename Epilogue>
  __device__ static void run(const __nv_bfloat16* a, int64_t lda, const int64_t* row_src, int valid_rows,
                             const decoded::Mxfp4Weights& w, int n0, const Epilogue& epilogue) {
    if (valid_rows <= 64)
      wgmma::regs::gemm_tile<64>(a, lda, row_src, w, n0, epilogue);
    else
      wgmma::regs::gemm_tile<128>(a, lda, row_src, w, n0, epilogue);
  }
};
constexpr int kTiledRows = 128;  // grouped pairs a block, every tiled kernel
static_assert(decoded::tile_m<4>() == kTiledRows && wgmma::kTileM == kTiledRows);

// One block per (column tile, expert tile); tiles past the step's count exit.
template <typename Tile, bool kSwiglu>
__global__ void __launch_bounds__(decoded::kThreads, Tile::kBlocksPerSm)
    moe_tiled_kernel(const __nv_bfloat16* x, const int32_t* row_token, MoeGroups groups,
                     Mxfp4Experts w, float limit, void* out) {
  __shared__ int64_t row_src[kTiledRows];
  if (static_cast<int32_t>(blockIdx.y) >= *groups.n_tiles) return;
  const int32_t tile = groups.tiles[blockIdx.y];
  const int32_t expert = tile >> 16;
  const int32_t g_begin = groups.expert_offsets[expert] + (tile & 0xffff) * kTiledRows;
  const int32_t g_end = min(groups.expert_offsets[expert + 1], g_begin + kTiledRows);
  for (int r = threadIdx.x; r < kTiledRows; r += blockDim.x) {
    const int32_t g = g_begin + r;
    row_src[r] = g < g_end ? (row_token ? row_token[g] : g) : -1;
  }
  __syncthreads();
  const decoded::Mxfp4Weights weights = expert_weights(w, expert);
  const uint16_t* bias = w.bias + static_cast<int64_t>(expert) * w.rows;
  const int n0 = blockIdx.x * Tile::kN;
  if constexpr (kSwiglu)
    Tile::run(x, w.cols, row_src, g_end - g_begin, weights, n0,
              SwigluEpilogue{static_cast<__nv_bfloat16*>(out), bias, w.rows, g_begin, g_end, limit});
  else
    Tile::run(x, w.cols, row_src, g_end - g_begin, weights, n0,
              tiled::BiasEpilogue{static_cast<float*>(out), bias, w.rows, g_begin, g_end});
}

// Balanced grids (`slots` > 0: resident blocks of one wave; the grid is
// whole waves of them, at least the tiles' bound of blocks): the step's real
// tiles share the first `waves` waves, each tile the same number of blocks
// (its slices; blocks past tiles * that exit), `waves` chosen for the
// shortest (waves x m-tile groups of the busiest block), fewest on ties.
// Every block computes the same choice from the tile count.
struct BalancedShare {
  int32_t tile, slice, n_slices;  // slice < 0: the block has no work
};

__device__ __forceinline__ BalancedShare balanced_share(int32_t n_tiles, int32_t groups, int32_t slots) {
  const int32_t max_waves = gridDim.x / slots;
  int32_t per_tile = 0, best = 0;
  for (int32_t waves = 1; waves <= max_waves; ++waves) {
    const int32_t blocks = waves * slots / n_tiles;  // a tile's
    if (blocks == 0) continue;
    const int32_t cost = waves * ((groups + blocks - 1) / blocks);
    if (per_tile == 0 || cost < best) per_tile = blocks, best = cost;
  }
  const int32_t b = blockIdx.x;
  if (b >= n_tiles * per_tile) return {0, -1, 0};
  return {b / per_tile, b % per_tile, per_tile};
}

// One block per (expert tile of up to S::kSlots grouped pairs, slice of the
// weight rows): the streamed kernel (gemm_mxfp4_streamed.cuh). Either the
// grid is (tiles bound, slices) and tiles past the step's count exit, or it
// is balanced (balanced_share). The down product reads the grouping (written
// before the gate/up product) and requests its first weights before its
// wait.
template <bool kSwiglu, class S>
__global__ void __launch_bounds__(S::kWarps * kWarpSize, S::kMinBlocks)
    moe_streamed_kernel(const uint16_t* x, const int32_t* row_token, MoeGroups groups, Mxfp4Experts w,
                        int32_t tile_rows, int32_t slots, float limit, void* out) {
  if constexpr (kSwiglu) {
    wait_for_previous_kernel();
    allow_next_kernel();
  }
  const int32_t n_tiles = *groups.n_tiles;
  int32_t tile_index = blockIdx.x, slice = blockIdx.y, n_slices = gridDim.y;
  if (slots > 0) {
    if (n_tiles == 0) return;
    const int32_t m_groups = (w.rows + S::kMTilesPerBlock * streamed::kMTile - 1) / (S::kMTilesPerBlock * streamed::kMTile);
    const BalancedShare share = balanced_share(n_tiles, m_groups, slots);
    if (share.slice < 0 || share.slice >= m_groups) return;  // no m-tiles left for this block
    tile_index = share.tile, slice = share.slice, n_slices = share.n_slices;
  } else if (tile_index >= n_tiles) {
    return;
  }
  const int32_t tile = groups.tiles[tile_index];
  const int32_t expert = tile >> 16;
  const int32_t g_begin = groups.expert_offsets[expert] + (tile & 0xffff) * tile_rows;
  const int32_t g_end = min(groups.expert_offsets[expert + 1], g_begin + tile_rows);
  const streamed::Mxfp4Weights weights = expert_weights(w, expert);
  const uint16_t* bias = w.bias + static_cast<int64_t>(expert) * w.rows;
  const auto row_src = [&](int r) -> int64_t { return row_token ? row_token[g_begin + r] : g_begin + r; };
  if constexpr (kSwiglu)
    streamed::gemm_tile<S>(x, row_src, g_end - g_begin, weights, slice, n_slices, [] {},
                           SwigluEpilogue{static_cast<__nv_bfloat16*>(out), bias, w.rows, g_begin, g_end, limit});
  else
    streamed::gemm_tile<S>(
        x, row_src, g_end - g_begin, weights, slice, n_slices,
        [] {
          wait_for_previous_kernel();
          allow_next_kernel();
        },
        tiled::BiasEpilogue{static_cast<float*>(out), bias, w.rows, g_begin, g_end});
}

// Raises a kernel's dynamic shared memory limit to `bytes` (its most at any
// K), once per kernel.
template <auto kKernel>
void allow_dynamic_smem(int bytes) {
  static const bool configured = [bytes] {
    GPTOSS_CUDA_CHECK(cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    return true;
  }();
  (void)configured;
}

// The streamed kernel's variants, A/B'd by one device call
// (docs/cuda-notes.md "h24moe2": what each changes, why, its prediction).
// Each is "base" (the kernel call 22 measured) with one change, but "all".
struct StreamedVariant {
  const char* name;
  bool rows32;    // moe_path_for: 32-row tiles (MoePath::Streamed32) from kRows32Pairs pairs an expert
  bool balanced;  // whole waves of blocks the step's tiles share evenly (balanced_share)
  bool sectors;   // whole-sector weight loads (streamed::item_block)
  bool split_k;   // K split between two warps where that keeps a one-fragment step in one wave
};
constexpr StreamedVariant kStreamedVariants[] = {
    {"base", false, false, false, false},  {"balance", false, true, false, false}, {"sectors", false, false, true, false},
    {"splitk", false, false, false, true}, {"t32", true, false, false, false},     {"all", true, true, true, true},
};
constexpr int32_t kTileRows = 16, kTileRows32 = 32;  // the streamed paths' tile rows
// Pairs an expert on average from which rows32 variants take 32-row tiles:
// decode at 128 sequences and up (gpt-oss-20b), where many experts have over
// 16 pairs and 16-row tiles decode their weights twice or more; below, the
// tiles seldom pass 16 rows and four fragments would only cost occupancy.
constexpr int32_t kRows32Pairs = 12;

// The variant in use (KernelFamily::Streamed, GPTOSS_STREAMED): its flags.
// kernel_variants.cu lists the same names in the same order (checked here
// once).
const StreamedVariant& streamed_variant() {
  static const bool same_names = [] {
    const std::vector<std::string>& names = kernel_variants(KernelFamily::Streamed);
    bool same = names.size() == std::size(kStreamedVariants);
    for (size_t i = 0; same && i < names.size(); ++i) same = names[i] == kStreamedVariants[i].name;
    if (!same) throw Error(GPTOSS_ERR_BACKEND, "GPTOSS_STREAMED: kernel_variants.cu and moe_experts.cu disagree");
    return true;
  }();
  (void)same_names;
  return kStreamedVariants[kernel_variant_index(KernelFamily::Streamed)];
}

// Tiles a step is expected to list (touched experts, more where one has over
// tile_rows pairs); the grid's x is the bound, moe_max_tiles.
int32_t expected_tiles(int32_t n_pairs, int32_t n_experts, int32_t tile_rows) {
  return std::max(std::min(n_pairs, n_experts), (n_pairs + tile_rows - 1) / tile_rows);
}

// The grid: every tile (x) times slices of the weight rows (y), sized so
// that the expected tiles get two waves of resident blocks, each warp an
// equal whole number of m-tiles; or (balanced) up to 4 waves of resident
// blocks in x, which the kernel shares among the step's real tiles
// (balanced_share): one where the expected tiles get 16 blocks each in one
// (twice as many real tiles, uneven experts, would still get 8: the busiest
// block at most an eighth over the mean), and always at least the tiles'
// bound. Blocks of waves the kernel does not choose exit at once.
template <class S>
dim3 streamed_grid(int32_t m_tiles, int32_t slots, int32_t tiles_bound, int32_t tiles, bool balanced) {
  if (balanced) {
    const int32_t waves = std::max(16 * tiles <= slots ? 1 : 4, (tiles_bound + slots - 1) / slots);
    return dim3(waves * slots, 1);
  }
  constexpr int kWaves = 2;
  const int32_t per_block = S::kMTilesPerBlock;
  const int32_t most = (m_tiles + per_block - 1) / per_block;  // slices of one m-tile a warp
  const int32_t slices = std::clamp((kWaves * slots + tiles - 1) / tiles, 1, most);
  const int32_t per_warp = (m_tiles + slices * per_block - 1) / (slices * per_block);
  return dim3(tiles_bound, (m_tiles + per_warp * per_block - 1) / (per_warp * per_block));
}

template <bool kSwiglu, class S>
void launch_streamed_shape(dim3 grid, int32_t tile_rows, int32_t slots, const bf16* x, const int32_t* row_token,
                           const MoeGroups& groups, const Mxfp4Experts& w, float limit, void* out,
                           cudaStream_t stream) {
  constexpr auto kernel = moe_streamed_kernel<kSwiglu, S>;
  // Four fragments at K = 4096 would stage 256 KiB, past the 227 KiB a block
  // may have: the limit is capped there, and a larger K fails here (gpt-oss
  // has K = 2880: 192 KiB).
  static const int smem_max = [] {
    int device = 0, optin = 0;
    GPTOSS_CUDA_CHECK(cudaGetDevice(&device));
    GPTOSS_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    return std::min(streamed::smem_bytes<S>(decoded::kMaxK), optin);
  }();
  allow_dynamic_smem<kernel>(smem_max);
  if (streamed::smem_bytes<S>(w.cols) > smem_max)
    throw Error(GPTOSS_ERR_BACKEND, "streamed MXFP4 experts: K = " + std::to_string(w.cols) +
                                        " stages more tokens than a block's shared memory holds at " +
                                        std::to_string(S::kSlots) + " rows a tile (GPTOSS_STREAMED)");
  launch_dependent(kernel, grid, S::kWarps * kWarpSize, streamed::smem_bytes<S>(w.cols), stream,
                   reinterpret_cast<const uint16_t*>(x), row_token, groups, w, tile_rows, slots, limit, out);
}

// The launch shapes: one fragment while a step has at most 8 pairs (no tile
// has more), 4-warp blocks, 4 an SM (the few experts of such a step get
// twice the blocks: batch 1 gate/up 4 x 90 blocks and down 4 x 45, one
// m-tile a warp); two fragments up to 16 rows, 8-warp blocks, 2 an SM; four
// up to 32 (tiles of 32 rows), 8-warp blocks, 1 an SM (192 KiB of staged
// tokens at K = 2880), 255 registers a thread, so 4 K items in flight.
template <bool kSectors>
using OneFragment = streamed::Shape<1, 4, 4, 3, 1, kSectors>;
template <bool kSectors>
using OneFragmentSplitK = streamed::Shape<1, 4, 4, 3, 2, kSectors>;
template <bool kSectors>
using TwoFragments = streamed::Shape<2, 8, 2, 3, 1, kSectors>;
template <bool kSectors>
using FourFragments = streamed::Shape<4, 8, 1, 4, 1, kSectors>;

// K is split only where the step still fits one wave of resident warps and
// every part has a K item.
template <bool kSwiglu, bool kSectors>
void launch_streamed(const StreamedVariant& v, int32_t tile_rows, const bf16* x, const int32_t* row_token,
                     const MoeGroups& groups, int32_t n_pairs, const Mxfp4Experts& w, float limit, void* out,
                     cudaStream_t stream) {
  const int32_t rows = std::min(n_pairs, tile_rows);  // the most a tile of the step can have
  const int32_t tiles_bound = moe_max_tiles(n_pairs, w.num_experts, tile_rows);
  const int32_t tiles = expected_tiles(n_pairs, w.num_experts, tile_rows);
  const int32_t m_tiles = (w.rows + streamed::kMTile - 1) / streamed::kMTile, sms = multiprocessor_count();
  const int32_t items = (w.cols + streamed::kItemK - 1) / streamed::kItemK;
  auto launch = [&](auto shape) {
    using S = decltype(shape);
    const int32_t slots = S::kMinBlocks * sms;
    const dim3 grid = streamed_grid<S>(m_tiles, slots, tiles_bound, tiles, v.balanced);
    launch_streamed_shape<kSwiglu, S>(grid, tile_rows, v.balanced ? slots : 0, x, row_token, groups, w, limit, out,
                                      stream);
  };
  if (rows <= 8) {
    using S = OneFragmentSplitK<kSectors>;
    const bool split = v.split_k && items >= S::kSplitK &&
                       int64_t(tiles) * m_tiles * S::kSplitK <= int64_t(S::kWarps) * S::kMinBlocks * sms;
    if (split)
      launch(S{});
    else
      launch(OneFragment<kSectors>{});
  } else if (rows <= 16) {
    launch(TwoFragments<kSectors>{});
  } else {
    launch(FourFragments<kSectors>{});
  }
}

template <typename Tile, bool kSwiglu>
void launch_tiled_kernel(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
                         const Mxfp4Experts& w, float limit, void* out, cudaStream_t stream) {
  constexpr auto kernel = moe_tiled_kernel<Tile, kSwiglu>;
  allow_dynamic_smem<kernel>(Tile::smem_bytes(decoded::kMaxK));
  const dim3 grid((w.rows + Tile::kN - 1) / Tile::kN, moe_max_tiles(n_pairs, w.num_experts, kTiledRows));
  kernel<<<grid, decoded::kThreads, Tile::smem_bytes(w.cols), stream>>>(reinterpret_cast<const __nv_bfloat16*>(x),
                                                                        row_token, groups, w, limit, out);
}

template <bool kSwiglu>
void launch_tiled(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
                  const Mxfp4Experts& w, float limit, void* out, cudaStream_t stream) {
  switch (tiled_kernel()) {
    case TiledKernel::Mma:
      return launch_tiled_kernel<MmaTile, kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
    case TiledKernel::Wgmma128:
      return launch_tiled_kernel<WgmmaTile<128>, kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
    case TiledKernel::Wgmma256:
      return launch_tiled_kernel<WgmmaTile<256>, kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
    case TiledKernel::WgmmaRegs:
      return launch_tiled_kernel<WgmmaRegsTile, kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
  }
}

// Rows come in pairs (gate and up; two outputs). No rows would size the
// streamed grid with a division by zero.
void check_experts(const Mxfp4Experts& w) {
  if (w.cols % 32 != 0 || w.cols > 32 * kWarpSize * kMaxBlocksPerLane || w.rows <= 0 || w.rows % 2 != 0)
    throw Error(GPTOSS_ERR_BACKEND, "MXFP4 experts: cols must be a multiple of 32 and <= 4096, rows even and > 0");
}

// The GEMV on tensor cores (GPTOSS_MOE_GEMV=mma4, mma6, mma12): one block
// per (16-row m-tile, expert), its kSplit warps splitting the m-tile's K
// items (warp s takes items s, s + kSplit, ...: at gpt-oss-20b's K of 2880,
// 12 items, 3 a warp at kSplit 4). An item is decoded and multiplied as in
// the streamed kernel (streamed::multiply: bit decode, one bf16 multiply per
// value pair, mma with the staged tokens as B), about 2.5 instructions a
// weight value against the base GEMV's 7 (a table lookup and an fp32 FMA per
// value: issue-bound at 1 TB/s, ncu call 20). Every warp requests all its
// items at once (kDepth covers kSplit * kDepth items), one memory latency a
// block, and the many small blocks (batch 1: 1 440 for gate/up, 720 for down)
// let the scheduler keep every SM loading. The kSplit partial sums meet in
// shared memory and warp 0 adds them in split order and applies the
// epilogue: a pair's bits do not depend on what else shares the step. Pairs
// are staged 8 at a time (one n8 fragment); an expert with more pairs reads
// its weights again per 8 (not a one-token case).
template <int kSplit>
struct GemvMma {
  // Items a warp has in flight: all of them at gpt-oss-20b's 12 items.
  static constexpr int kDepth = (12 + kSplit - 1) / kSplit;
  static constexpr int kThreads = kSplit * kWarpSize;
  static constexpr int kMinBlocks = 16 / kSplit > 2 ? 16 / kSplit : 2;  // 16-24 warps an SM
};

template <bool kSwiglu, int kSplit>
__global__ void __launch_bounds__(GemvMma<kSplit>::kThreads, GemvMma<kSplit>::kMinBlocks)
    moe_gemv_mma_kernel(const uint16_t* x, const int32_t* row_token, MoeGroups groups, Mxfp4Experts w,
                        float limit, void* out) {
  using streamed::Item;
  constexpr int kDepth = GemvMma<kSplit>::kDepth;
  extern __shared__ uint4 xs[];
  __shared__ float4 partial[kSplit][kWarpSize];
  if constexpr (kSwiglu) {
    wait_for_previous_kernel();
    allow_next_kernel();
  }
  ExpertPairs pairs;
  if (!gemv_expert_pairs(groups, pairs)) return;
  const int32_t g_begin = pairs.begin, g_end = pairs.end;
  const streamed::Mxfp4Weights weights = expert_weights(w, pairs.expert);
  const uint16_t* bias = w.bias + static_cast<int64_t>(pairs.expert) * w.rows;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize, g = lane / 4, t = lane % 4;
  const int items = (w.cols + streamed::kItemK - 1) / streamed::kItemK;
  const int per_warp = (items + kSplit - 1) / kSplit;  // the same for every warp: uniform barriers
  const int32_t row = static_cast<int32_t>(blockIdx.x) * streamed::kMTile + 2 * g;
  // Slot i of this warp is item warp + i * kSplit (past `items`: zeros, skipped).
  Item ring[kDepth];
  const auto load_first = [&] {
#pragma unroll
    for (int d = 0; d < kDepth; ++d)
      if (d < per_warp) ring[d].load(weights, row, warp + d * kSplit, t);
  };
  load_first();
  if constexpr (!kSwiglu) {
    wait_for_previous_kernel();
    allow_next_kernel();
  }
  for (int32_t g0 = g_begin; g0 < g_end; g0 += 8) {
    const int32_t n = min(8, g_end - g0);
    if (g0 != g_begin) load_first();
    __syncthreads();  // the previous pairs' tokens and partial sums are consumed
    streamed::stage_tokens<1>(
        x, w.cols, n, [&](int r) -> int64_t { return row_token ? row_token[g0 + r] : g0 + r; }, xs);
    __syncthreads();
    float acc[1][4] = {};
    for (int i0 = 0; i0 < per_warp; i0 += kDepth) {
#pragma unroll
      for (int d = 0; d < kDepth; ++d) {
        const int i = i0 + d, c = warp + i * kSplit;
        if (i >= per_warp) break;
        if (c < items) {  // warp-uniform, as mma.sync needs (see gemm_tile)
          if (__any_sync(0xffffffffu, ring[d].wide()))
            streamed::multiply<1, true>(ring[d], xs, c, lane, 1, acc);
          else
            streamed::multiply<1, false>(ring[d], xs, c, lane, 1, acc);
        }
        if (i + kDepth < per_warp) ring[d].load(weights, row, c + kDepth * kSplit, t);
      }
    }
    partial[warp][lane] = make_float4(acc[0][0], acc[0][1], acc[0][2], acc[0][3]);
    __syncthreads();
    if (warp == 0) {
      float4 sum = partial[0][lane];
#pragma unroll
      for (int s = 1; s < kSplit; ++s) {
        const float4 p = partial[s][lane];
        sum.x += p.x, sum.y += p.y, sum.z += p.z, sum.w += p.w;
      }
      // mma rows g and g + 8 are weight rows 2g and 2g + 1; columns 2t, 2t + 1 are pairs.
      const auto store = [&](const auto& epilogue) {
        epilogue(2 * t, row, sum.x, sum.z);
        epilogue(2 * t + 1, row, sum.y, sum.w);
      };
      if constexpr (kSwiglu)
        store(SwigluEpilogue{static_cast<__nv_bfloat16*>(out), bias, w.rows, g0, g0 + n, limit});
      else
        store(tiled::BiasEpilogue{static_cast<float*>(out), bias, w.rows, g0, g0 + n});
    }
  }
}

template <bool kSwiglu, int kSplit>
void launch_gemv_mma(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
                     const Mxfp4Experts& w, float limit, void* out, cudaStream_t stream) {
  constexpr auto kernel = moe_gemv_mma_kernel<kSwiglu, kSplit>;
  allow_dynamic_smem<kernel>(streamed::staged_bytes<8>(decoded::kMaxK));
  const dim3 grid((w.rows + streamed::kMTile - 1) / streamed::kMTile, std::min(w.num_experts, n_pairs));
  launch_dependent(kernel, grid, GemvMma<kSplit>::kThreads, streamed::staged_bytes<8>(w.cols), stream,
                   reinterpret_cast<const uint16_t*>(x), row_token, groups, w, limit, out);
}

template <bool kSwiglu, int kLayout, int kBlocksPerLane>
void launch_gemv_kernel(dim3 grid, const bf16* x, const int32_t* row_token, const MoeGroups& groups,
                        const Mxfp4Experts& w, float limit, void* out, cudaStream_t stream) {
  constexpr auto kernel = moe_gemv_kernel<kSwiglu, kLayout, kBlocksPerLane>;
  allow_dynamic_smem<kernel>((16 + 16 * kWarpSize * kBlocksPerLane * kGemvStagedPairs) * sizeof(float));
  const size_t smem = (16 + static_cast<size_t>(w.cols / 2) * kGemvStagedPairs) * sizeof(float);
  launch_dependent(kernel, grid, kGemvWarps * kWarpSize, smem, stream, x, row_token, groups, w, limit, out);
}

// One token's pairs (top-k of distinct experts: one pair an expert) are
// applied one at a time; more tokens' pairs four at a time where an expert
// has several. The grid gives each warp as many row pairs as a one-token step
// that fills every SM with kGemvBlocksPerSm blocks in one wave. With more
// tokens the experts' pair counts differ, so a one-wave grid would leave the
// busiest expert's few blocks running alone (call 17: batch 8 took 18.7 ms a
// step, 15.7 ms with one row pair a warp); the same per-warp share in several
// waves lets the block scheduler balance them.
template <bool kSwiglu>
void launch_gemv(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
                 const Mxfp4Experts& w, float limit, void* out, cudaStream_t stream) {
  const int32_t experts = std::min(w.num_experts, n_pairs);
  const int32_t warp_groups = (w.rows / 2 + kGemvWarps - 1) / kGemvWarps;  // per expert
  const int32_t slots = kGemvBlocksPerSm * multiprocessor_count();
  const int32_t one_token = std::min(experts, kGemvOneTokenPairs);
  const int32_t groups_per_block = (warp_groups * one_token + slots - 1) / slots;
  const dim3 grid((warp_groups + groups_per_block - 1) / groups_per_block, experts);
  const bool single = n_pairs <= kGemvOneTokenPairs, narrow = w.cols <= 32 * kWarpSize * 3;
  if (single && narrow)
    launch_gemv_kernel<kSwiglu, 1, 3>(grid, x, row_token, groups, w, limit, out, stream);
  else if (single)
    launch_gemv_kernel<kSwiglu, 1, kMaxBlocksPerLane>(grid, x, row_token, groups, w, limit, out, stream);
  else if (narrow)
    launch_gemv_kernel<kSwiglu, 4, 3>(grid, x, row_token, groups, w, limit, out, stream);
  else
    launch_gemv_kernel<kSwiglu, 4, kMaxBlocksPerLane>(grid, x, row_token, groups, w, limit, out, stream);
}

// GPTOSS_MOE_GEMV (kernel_variants.cu): base (moe_gemv_kernel) or mma4, mma6,
// mma12 (moe_gemv_mma_kernel, K split over 4, 6 or 12 warps).
template <bool kSwiglu>
void launch_gemv_variant(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
                         const Mxfp4Experts& w, float limit, void* out, cudaStream_t stream) {
  switch (kernel_variant_index(KernelFamily::MoeGemv)) {
    case 1: return launch_gemv_mma<kSwiglu, 4>(x, row_token, groups, n_pairs, w, limit, out, stream);
    case 2: return launch_gemv_mma<kSwiglu, 6>(x, row_token, groups, n_pairs, w, limit, out, stream);
    case 3: return launch_gemv_mma<kSwiglu, 12>(x, row_token, groups, n_pairs, w, limit, out, stream);
    default: return launch_gemv<kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
  }
}

template <bool kSwiglu>
void launch(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
            const Mxfp4Experts& w, float limit, MoePath path, void* out, cudaStream_t stream) {
  check_experts(w);
  if (n_pairs == 0) return;
  if (path == MoePath::Gemv) {
    launch_gemv_variant<kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
  } else if (path == MoePath::Streamed || path == MoePath::Streamed32) {
    const StreamedVariant& v = streamed_variant();
    const int32_t tile_rows = moe_tile_rows(path);
    if (v.sectors)
      launch_streamed<kSwiglu, true>(v, tile_rows, x, row_token, groups, n_pairs, w, limit, out, stream);
    else
      launch_streamed<kSwiglu, false>(v, tile_rows, x, row_token, groups, n_pairs, w, limit, out, stream);
  } else {
    launch_tiled<kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
  }
  GPTOSS_CUDA_CHECK_LAUNCH();
}

// GPTOSS_MOE_KERNEL picks the expert kernel for A/B runs: auto (the rule
// below), streamed (the streamed kernel up to 32 pairs an expert, one token
// included; 128-row tiles beyond), gemv, or tiled (128-row tiles for every
// step). Read once, like GPTOSS_PDL.
enum class MoeKernelChoice { Auto, Streamed, Gemv, Tiled };

MoeKernelChoice moe_kernel_choice() {
  static const MoeKernelChoice choice = [] {
    const char* value = std::getenv("GPTOSS_MOE_KERNEL");
    if (value == nullptr || std::strcmp(value, "auto") == 0) return MoeKernelChoice::Auto;
    if (std::strcmp(value, "streamed") == 0) return MoeKernelChoice::Streamed;
    if (std::strcmp(value, "gemv") == 0) return MoeKernelChoice::Gemv;
    if (std::strcmp(value, "tiled") == 0) return MoeKernelChoice::Tiled;
    throw Error(GPTOSS_ERR_BACKEND, std::string("GPTOSS_MOE_KERNEL must be auto, streamed, gemv or tiled, not '") +
                                        value + "'");
  }();
  return choice;
}

std::atomic<TiledKernel>& tiled_kernel_slot() {
  static std::atomic<TiledKernel> slot{[] {
    const char* value = std::getenv("GPTOSS_TILED");
    if (value == nullptr) return TiledKernel::Mma;
    for (const TiledKernel kernel : kTiledKernels)
      if (std::strcmp(value, tiled_kernel_name(kernel)) == 0) return kernel;
    throw Error(GPTOSS_ERR_BACKEND, std::string("GPTOSS_TILED must be mma, wgmma128, wgmma256 or wgmma_regs, not '") + value + "'");
  }()};
  return slot;
}

}  // namespace

const char* tiled_kernel_name(TiledKernel kernel) {
  switch (kernel) {
    case TiledKernel::Mma: return "mma";
    case TiledKernel::Wgmma128: return "wgmma128";
    case TiledKernel::Wgmma256: return "wgmma256";
    case TiledKernel::WgmmaRegs: return "wgmma_regs";
  }
  return "?";
}

TiledKernel tiled_kernel() { return tiled_kernel_slot().load(); }

void set_tiled_kernel(TiledKernel kernel) { tiled_kernel_slot().store(kernel); }

MoePath moe_path_for(int32_t n_pairs, int32_t n_experts) {
  // Measured on an H100 (call 22, 20b shape, whole decode steps): the
  // streamed kernel against the GEMV and the 32-row tiles it replaced,
  // b1 3.09 vs 2.94 ms, b2 3.53 vs 4.04, b8 6.06 vs 8.23, b64 10.92 vs
  // 13.72, b256 21.21 vs 22.55, a 50-token extend 10.42 vs 13.42. So the
  // GEMV keeps one-token steps (a pair for every eighth expert: its
  // down product streamed 883 GB/s against the streamed kernel's 613 at one
  // pair an expert), the streamed kernel takes everything up to 32 pairs an
  // expert, and 128-row tiles, which decode each weight once per 128 pairs,
  // the rest (prefill).
  const bool few = n_pairs <= 32 * n_experts;
  const MoePath streamed = streamed_variant().rows32 && n_pairs >= kRows32Pairs * n_experts ? MoePath::Streamed32
                                                                                             : MoePath::Streamed;
  switch (moe_kernel_choice()) {
    case MoeKernelChoice::Streamed: return few ? streamed : MoePath::Tiled;
    case MoeKernelChoice::Gemv: return MoePath::Gemv;
    case MoeKernelChoice::Tiled: return MoePath::Tiled;
    case MoeKernelChoice::Auto: break;
  }
  if (8 * n_pairs <= n_experts) return MoePath::Gemv;
  return few ? streamed : MoePath::Tiled;
}

int32_t moe_tile_rows(MoePath path) {
  switch (path) {
    case MoePath::Gemv: return kGemvTileRows;
    case MoePath::Streamed: return kTileRows;
    case MoePath::Streamed32: return kTileRows32;
    case MoePath::Tiled: break;
  }
  return kTiledRows;
}

int32_t moe_min_tile_rows() { return kTileRows; }


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
