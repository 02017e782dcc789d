// The MXFP4 expert products, dequantisation fused into both kernels.
//
// GEMV path (decode): a warp owns one output column (for gate/up: the gate row
// and the up row of one SwiGLU output), holds that weight row in registers
// (16-byte loads, one MXFP4 block per lane) and applies it to every pair
// routed to the expert, 1 or 4 pairs at a time. Weights are read once per
// step whatever the number of pairs.
//
// Tiled paths (decode from a few sequences on, prefill): tiles of 32 or 128
// grouped pairs of one expert and 128 output columns, each weight tile
// decoded once per block into shared memory (gemm_mxfp4_decoded.cuh).
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/device_math.cuh"
#include "backend/cuda/kernels/gemm_mxfp4_decoded.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace gptoss::cuda {
namespace {

constexpr float kSwigluAlpha = 1.702f;
constexpr int kGemvWarps = 8;
constexpr int kMaxBlocksPerLane = 4;    // MXFP4 blocks per lane: cols <= 4096
// The GEMV's "tiles" are whole experts: one list entry per expert with pairs.
constexpr int32_t kGemvTileRows = 1 << 24;


__device__ __forceinline__ float swiglu(float gate, float up, float limit) {
  const float g = fminf(gate, limit);
  const float u = fminf(fmaxf(up, -limit), limit);
  return (u + 1.0f) * (g / (1.0f + expf(-kSwigluAlpha * g)));
}

// kRows weight rows per warp: 2 (gate, up) with the SwiGLU epilogue, else 1.
// The block stages kPairs rows of x in shared memory as float, transposed so
// that value j of MXFP4 block b sits at [j][b]: lane b reads consecutive
// words (no bank conflicts) while it decodes block b. FP4 codes become
// values through a 16-entry shared table; the power-of-two scale multiplies
// each block's partial sum once.
template <int kRows, int kPairs>
__global__ void __launch_bounds__(kGemvWarps * kWarpSize, 2)
    moe_gemv_kernel(const uint16_t* x, const int32_t* row_token, MoeGroups groups,
                    Mxfp4Experts w, float limit, void* out) {
  extern __shared__ float smem[];
  float* lut = smem;
  float* xs = smem + 16;  // [32][n_blocks][kPairs]
  const int lane = threadIdx.x % kWarpSize;
  // Blocks in y walk the experts that have pairs (the tile list of this path).
  if (static_cast<int32_t>(blockIdx.y) >= *groups.n_tiles) return;
  const int32_t expert = groups.tiles[blockIdx.y] >> 16;
  const int32_t column = blockIdx.x * kGemvWarps + threadIdx.x / kWarpSize;
  const int32_t g_begin = groups.expert_offsets[expert], g_end = groups.expert_offsets[expert + 1];
  const bool active = column * kRows < w.rows;
  if (threadIdx.x < 16) lut[threadIdx.x] = fp4_e2m1_value(threadIdx.x);

  const int32_t n_blocks = w.cols / 32;
  uint4 wq[kRows][kMaxBlocksPerLane];
  float ws[kRows][kMaxBlocksPerLane];
  float bias[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = static_cast<int64_t>(expert) * w.rows + (active ? column * kRows + r : 0);
    bias[r] = bf16_bits_to_float(w.bias[row]);
#pragma unroll
    for (int i = 0; i < kMaxBlocksPerLane; ++i) {
      const int32_t b = lane + i * kWarpSize;
      const bool ok = active && b < n_blocks;
      wq[r][i] = ok ? __ldg(reinterpret_cast<const uint4*>(w.blocks + (row * n_blocks + b) * 16))
                    : make_uint4(0, 0, 0, 0);
      ws[r][i] = ok ? e8m0_value(__ldg(w.scales + row * n_blocks + b)) : 0.0f;
    }
  }

  for (int32_t g0 = g_begin; g0 < g_end; g0 += kPairs) {
    const int32_t n = min(kPairs, g_end - g0);
    __syncthreads();  // the previous pairs are consumed (and the table is written)
    for (int32_t i = threadIdx.x; i < w.cols * kPairs; i += blockDim.x) {
      const int32_t p = i / w.cols, k = i % w.cols;
      const int64_t src = p < n ? (row_token ? row_token[g0 + p] : g0 + p) : -1;
      xs[((k % 32) * n_blocks + k / 32) * kPairs + p] =
          src >= 0 ? bf16_bits_to_float(x[src * w.cols + k]) : 0.0f;
    }
    __syncthreads();
    if (!active) continue;

    float acc[kRows][kPairs] = {};
#pragma unroll
    for (int i = 0; i < kMaxBlocksPerLane; ++i) {
      const int32_t b = lane + i * kWarpSize;
      if (b >= n_blocks) break;
      float part[kRows][kPairs] = {};
#pragma unroll 1
      for (int q = 0; q < 4; ++q) {  // rolled: unrolled, it keeps 128 loads in flight in registers
        uint32_t word[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r)
          word[r] = q == 0 ? wq[r][i].x : q == 1 ? wq[r][i].y : q == 2 ? wq[r][i].z : wq[r][i].w;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float* xv = xs + ((q * 8 + e) * n_blocks + b) * kPairs;
          float xp[kPairs];
          if constexpr (kPairs == 4) {
            const float4 v4 = *reinterpret_cast<const float4*>(xv);
            xp[0] = v4.x, xp[1] = v4.y, xp[2] = v4.z, xp[3] = v4.w;
          } else {
#pragma unroll
            for (int p = 0; p < kPairs; ++p) xp[p] = xv[p];
          }
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            const float wv = lut[(word[r] >> (4 * e)) & 0xfu];
#pragma unroll
            for (int p = 0; p < kPairs; ++p) part[r][p] = fmaf(wv, xp[p], part[r][p]);
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int p = 0; p < kPairs; ++p) acc[r][p] = fmaf(part[r][p], ws[r][i], acc[r][p]);
    }
#pragma unroll
    for (int p = 0; p < kPairs; ++p) {
      if (p >= n) break;
      float v[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) v[r] = warp_sum(acc[r][p]) + bias[r];
      if (lane != 0) continue;
      if constexpr (kRows == 2)
        static_cast<__nv_bfloat16*>(out)[static_cast<int64_t>(g0 + p) * (w.rows / 2) + column] =
            __float2bfloat16_rn(swiglu(v[0], v[1], limit));
      else
        static_cast<float*>(out)[static_cast<int64_t>(g0 + p) * w.rows + column] = v[0];
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
template <int kMi, bool kSwiglu>
__global__ void __launch_bounds__(decoded::kThreads, 2)
    moe_tiled_kernel(const __nv_bfloat16* x, const int32_t* row_token, MoeGroups groups,
                     Mxfp4Experts w, float limit, void* out) {
  constexpr int kTileM = decoded::tile_m<kMi>();
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
  const decoded::Mxfp4Weights weights{w.blocks + static_cast<int64_t>(expert) * w.rows * n_blocks * 16,
                                      w.scales + static_cast<int64_t>(expert) * w.rows * n_blocks,
                                      w.rows, w.cols};
  const uint16_t* bias = w.bias + static_cast<int64_t>(expert) * w.rows;
  const int n0 = blockIdx.x * decoded::kTileN;
  if constexpr (kSwiglu)
    decoded::gemm_tile<kMi>(x, w.cols, row_src, g_end - g_begin, weights, n0,
                            SwigluEpilogue{static_cast<__nv_bfloat16*>(out), bias, w.rows, g_begin, g_end, limit});
  else
    decoded::gemm_tile<kMi>(x, w.cols, row_src, g_end - g_begin, weights, n0,
                            tiled::BiasEpilogue{static_cast<float*>(out), bias, w.rows, g_begin, g_end});
}

template <int kMi, bool kSwiglu>
void launch_tiled(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
                  const Mxfp4Experts& w, float limit, void* out, cudaStream_t stream) {
  static const bool configured = [] {
    GPTOSS_CUDA_CHECK(cudaFuncSetAttribute(moe_tiled_kernel<kMi, kSwiglu>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           decoded::smem_bytes<kMi>(decoded::kMaxK)));
    return true;
  }();
  (void)configured;
  const dim3 grid((w.rows + decoded::kTileN - 1) / decoded::kTileN,
                  moe_max_tiles(n_pairs, w.num_experts, decoded::tile_m<kMi>()));
  moe_tiled_kernel<kMi, kSwiglu><<<grid, decoded::kThreads, decoded::smem_bytes<kMi>(w.cols), stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), row_token, groups, w, limit, out);
}

void check_experts(const Mxfp4Experts& w) {
  if (w.cols % 32 != 0 || w.cols > 32 * kWarpSize * kMaxBlocksPerLane || w.rows % 2 != 0)
    throw Error(GPTOSS_ERR_BACKEND, "MXFP4 experts: cols must be a multiple of 32 and <= 4096");
}

template <int kRows, bool kSwiglu>
void launch(const bf16* x, const int32_t* row_token, const MoeGroups& groups, int32_t n_pairs,
            const Mxfp4Experts& w, float limit, MoePath path, void* out, cudaStream_t stream) {
  check_experts(w);
  if (n_pairs == 0) return;
  if (path == MoePath::Gemv) {
    // One pair at a time when pairs are about one per expert (decode at small
    // batches), else four sharing each decoded weight.
    const int32_t columns = w.rows / kRows;
    const dim3 grid((columns + kGemvWarps - 1) / kGemvWarps, std::min(w.num_experts, n_pairs));
    const bool single = n_pairs <= w.num_experts;
    const size_t smem = (16 + static_cast<size_t>(w.cols) * (single ? 1 : 4)) * sizeof(float);
    static const bool configured = [] {
      constexpr int kMax = (16 + 32 * kWarpSize * kMaxBlocksPerLane * 4) * sizeof(float);
      GPTOSS_CUDA_CHECK(cudaFuncSetAttribute(moe_gemv_kernel<kRows, 4>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, kMax));
      return true;
    }();
    (void)configured;
    if (single)
      moe_gemv_kernel<kRows, 1><<<grid, kGemvWarps * kWarpSize, smem, stream>>>(x, row_token, groups,
                                                                                 w, limit, out);
    else
      moe_gemv_kernel<kRows, 4><<<grid, kGemvWarps * kWarpSize, smem, stream>>>(x, row_token, groups,
                                                                                 w, limit, out);
  } else if (path == MoePath::TiledSmall) {
    launch_tiled<1, kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
  } else {
    launch_tiled<4, kSwiglu>(x, row_token, groups, n_pairs, w, limit, out, stream);
  }
  GPTOSS_CUDA_CHECK_LAUNCH();
}

}  // namespace

MoePath moe_path_for(int32_t n_pairs, int32_t n_experts) {
  // The GEMV streams a touched expert's weights at ~0.8 TB/s (call 16: 0.42 ms
  // a touched expert over 24 layers at batch 1, 0.50 at batch 8); a 32-row
  // tile block takes ~45 us whatever its rows (6.0 ms gate/up at batch 32,
  // 7.0 at 128), so the tiles cost whole waves of 264 blocks: gate/up one per
  // 5.9 touched experts, down one per 11.5. Beyond a pair for every fourth
  // expert (3 sequences at top-4 of 32) the tiles' waves cost less than the
  // GEMV's bytes (docs/cuda-notes.md, h15moe round 2). Small tiles until
  // experts average 32 pairs (decode at 256 sequences), then full tiles.
  if (4 * n_pairs <= n_experts) return MoePath::Gemv;
  return n_pairs <= 32 * n_experts ? MoePath::TiledSmall : MoePath::Tiled;
}

int32_t moe_tile_rows(MoePath path) {
  switch (path) {
    case MoePath::Gemv: return kGemvTileRows;
    case MoePath::TiledSmall: return decoded::tile_m<1>();
    case MoePath::Tiled: break;
  }
  return decoded::tile_m<4>();
}

void moe_gate_up_swiglu(const bf16* x, const MoeGroups& groups, int32_t n_pairs,
                        const Mxfp4Experts& w, float limit, MoePath path, bf16* act,
                        cudaStream_t stream) {
  launch<2, true>(x, groups.pair_token, groups, n_pairs, w, limit, path, act, stream);
}

void moe_down(const bf16* act, const MoeGroups& groups, int32_t n_pairs, const Mxfp4Experts& w,
              MoePath path, float* y, cudaStream_t stream) {
  launch<1, false>(act, nullptr, groups, n_pairs, w, 0.0f, path, y, stream);
}

}  // namespace gptoss::cuda
