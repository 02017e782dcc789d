// Dense bf16 layers (QKV, attention output, router, unembedding):
// y = x W^T + b with float accumulation.
//
// Decode reads each weight once per step, so few rows take a GEMV whose warps
// each own output columns and stream their weight rows in 16-byte loads, the
// next slice's loads in flight while the current one is used. Many rows take
// cuBLASLt where the build has it (linear_cublaslt.cc), else the tensor-core
// tiled kernel (gemm_tiled.cuh).
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/device_math.cuh"
#include "backend/cuda/kernels/gemm_tiled.cuh"
#include "backend/cuda/kernels/kernels.h"
#include "backend/cuda/kernels/sm_count.h"

namespace gptoss::cuda {
namespace {

constexpr int kGemvRows = 8;          // x rows one GEMV block handles
constexpr int kGemvWarps = 8;
constexpr int kGemvBlocksPerSm = 2;   // the GEMV's __launch_bounds__ minimum, used to size its grid
constexpr int kGemvSliceVectors = 6;  // 16-byte weight vectors per lane and slice
constexpr int32_t kGemvMaxBatch = 8;  // linear_bf16 uses the GEMV up to this many rows
constexpr int kDenseMi = 4;           // tiled path: 128-row tiles

// One slice of a weight row as a lane holds it: the 16-byte vectors
// first + lane, first + lane + 32, ... (kGemvSliceVectors of them).
struct WeightSlice {
  uint4 v[kGemvSliceVectors];

  __device__ __forceinline__ void load(const uint4* row, int32_t first, int32_t n_vec, int lane) {
#pragma unroll
    for (int i = 0; i < kGemvSliceVectors; ++i) {
      const int32_t c = first + lane + i * kWarpSize;
      v[i] = c < n_vec ? __ldg(row + c) : make_uint4(0, 0, 0, 0);
    }
  }
};

// Each warp walks output columns (its global warp index, then every
// gridDim.x * kGemvWarps-th), each column's weight row in slices of
// 32 * kGemvSliceVectors vectors, and loads the next slice (of this column or
// the next) before it multiplies the current one: every warp keeps a slice's
// bytes in flight for the whole kernel, and the grid fills each SM with
// kGemvBlocksPerSm blocks of equal work. Lane l adds the vectors l, l + 32,
// ... of the row in order and the warp's partial sums are added by warp_sum,
// so a row's result does not depend on how many rows share the block.
__global__ void __launch_bounds__(kGemvWarps * kWarpSize, kGemvBlocksPerSm)
    gemv_bf16_kernel(const uint16_t* x, int32_t n_rows, int32_t in_dim, const uint16_t* weight,
                     const uint16_t* bias, int32_t out_dim, float* y) {
  const int lane = threadIdx.x % kWarpSize;
  const int32_t row0 = blockIdx.y * kGemvRows;
  const int32_t rows = min(kGemvRows, n_rows - row0);
  const int32_t n_vec = in_dim / 8, slice_vec = kGemvSliceVectors * kWarpSize;
  const int32_t stride = gridDim.x * kGemvWarps;
  const uint4* w = reinterpret_cast<const uint4*>(weight);
  const uint4* xr = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(row0) * in_dim);

  int32_t o = blockIdx.x * kGemvWarps + threadIdx.x / kWarpSize, first = 0;
  WeightSlice cur{};
  if (o < out_dim) cur.load(w + static_cast<int64_t>(o) * n_vec, 0, n_vec, lane);
  float acc[kGemvRows] = {};
  while (o < out_dim) {
    // The next slice: further on in this row, else the next column's first.
    const bool row_done = first + slice_vec >= n_vec;
    const int32_t next_o = row_done ? o + stride : o, next_first = row_done ? 0 : first + slice_vec;
    WeightSlice nxt{};
    if (next_o < out_dim) nxt.load(w + static_cast<int64_t>(next_o) * n_vec, next_first, n_vec, lane);

#pragma unroll
    for (int i = 0; i < kGemvSliceVectors; ++i) {
      const int32_t c = first + lane + i * kWarpSize;
      if (c >= n_vec) break;
      float wf[8];
      unpack_bf16x8(cur.v[i], wf);
#pragma unroll
      for (int r = 0; r < kGemvRows; ++r) {
        if (r >= rows) break;
        float xf[8];
        unpack_bf16x8(__ldg(xr + static_cast<int64_t>(r) * n_vec + c), xf);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[r] = fmaf(xf[e], wf[e], acc[r]);
      }
    }
    if (row_done) {
      const float b = bias ? bf16_bits_to_float(bias[o]) : 0.0f;
#pragma unroll
      for (int r = 0; r < kGemvRows; ++r) {
        if (r >= rows) break;
        const float sum = warp_sum(acc[r]);
        if (lane == 0) y[static_cast<int64_t>(row0 + r) * out_dim + o] = sum + b;
        acc[r] = 0.0f;
      }
    }
    o = next_o, first = next_first;
    cur = nxt;
  }
}

__global__ void __launch_bounds__(tiled::kThreads)
    tiled_bf16_kernel(const __nv_bfloat16* x, int32_t n_rows, int32_t in_dim,
                      const __nv_bfloat16* weight, const uint16_t* bias, int32_t out_dim, float* y) {
  constexpr int kTileM = tiled::tile_m<kDenseMi>();
  __shared__ int64_t row_src[kTileM];
  const int32_t row0 = blockIdx.y * kTileM;
  for (int r = threadIdx.x; r < kTileM; r += blockDim.x)
    row_src[r] = row0 + r < n_rows ? row0 + r : -1;
  __syncthreads();
  tiled::gemm_tile<kDenseMi>(x, in_dim, row_src, tiled::Bf16Weights{weight, out_dim, in_dim},
                   blockIdx.x * tiled::kTileN, in_dim,
                   tiled::BiasEpilogue{y, bias, out_dim, row0, n_rows});
}

__global__ void add_bias_rows_kernel(float* y, const uint16_t* bias, int64_t n, int32_t out_dim) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += bf16_bits_to_float(bias[i % out_dim]);
}

}  // namespace

void add_bias_rows(float* y, const bf16* bias, int32_t n_rows, int32_t out_dim, cudaStream_t stream) {
  const int64_t n = int64_t(n_rows) * out_dim;
  if (n == 0) return;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 4096));
  add_bias_rows_kernel<<<blocks, threads, 0, stream>>>(y, bias, n, out_dim);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

#if !GPTOSS_WITH_CUBLASLT
void prepare_linear_bf16(cudaStream_t) {}  // the own kernels need nothing set up
#endif

void linear_bf16_gemv(const bf16* x, int32_t n_rows, int32_t in_dim, const bf16* weight,
                      const bf16* bias, int32_t out_dim, float* y, cudaStream_t stream) {
  if (in_dim % 8 != 0)
    throw Error(GPTOSS_ERR_BACKEND, "linear_bf16_gemv: in_dim must be a multiple of 8");
  if (n_rows == 0) return;
  // Columns per warp such that one wave of kGemvBlocksPerSm blocks per SM
  // covers every (column, row group) once.
  const int32_t row_groups = (n_rows + kGemvRows - 1) / kGemvRows;
  const int32_t warps = kGemvWarps * kGemvBlocksPerSm * multiprocessor_count();
  const int32_t per_warp = std::max<int32_t>(1, (out_dim * row_groups + warps - 1) / warps);
  const int32_t per_block = kGemvWarps * per_warp;
  const dim3 grid((out_dim + per_block - 1) / per_block, row_groups);
  gemv_bf16_kernel<<<grid, kGemvWarps * kWarpSize, 0, stream>>>(x, n_rows, in_dim, weight, bias,
                                                                out_dim, y);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

void linear_bf16_tiled(const bf16* x, int32_t n_rows, int32_t in_dim, const bf16* weight,
                       const bf16* bias, int32_t out_dim, float* y, cudaStream_t stream) {
  if (in_dim % tiled::kTileK != 0)
    throw Error(GPTOSS_ERR_BACKEND, "linear_bf16_tiled: in_dim must be a multiple of 32");
  if (n_rows == 0) return;
  constexpr int kSmem = tiled::smem_bytes<kDenseMi, tiled::Bf16Weights>();
  static const bool configured = [] {
    GPTOSS_CUDA_CHECK(cudaFuncSetAttribute(tiled_bf16_kernel,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return true;
  }();
  (void)configured;
  const dim3 grid((out_dim + tiled::kTileN - 1) / tiled::kTileN,
                  (n_rows + tiled::tile_m<kDenseMi>() - 1) / tiled::tile_m<kDenseMi>());
  tiled_bf16_kernel<<<grid, tiled::kThreads, kSmem, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), n_rows, in_dim,
      reinterpret_cast<const __nv_bfloat16*>(weight), bias, out_dim, y);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

void linear_bf16(const bf16* x, int32_t n_rows, int32_t in_dim, const bf16* weight,
                 const bf16* bias, int32_t out_dim, float* y, cudaStream_t stream) {
  if (n_rows <= kGemvMaxBatch)
    linear_bf16_gemv(x, n_rows, in_dim, weight, bias, out_dim, y, stream);
  else
#if GPTOSS_WITH_CUBLASLT
    linear_bf16_cublaslt(x, n_rows, in_dim, weight, bias, out_dim, y, stream);
#else
    linear_bf16_tiled(x, n_rows, in_dim, weight, bias, out_dim, y, stream);
#endif
}

}  // namespace gptoss::cuda
