// The tensor-core tiled matrix product shared by the dense bf16 layers and the
// MXFP4 expert layers: C[m][n] = sum_k A[m][k] * B[n][k], float accumulation.
//
// One block computes a (32 kMi) x 128 tile of C with 8 warps (2 x 4, each
// 16 kMi x 32: kMi x 4 mma.sync m16n8k16 bf16 tiles), stepping through K 32 at
// a time with a cp.async pipeline (3 stages for bf16 weights; 6 for MXFP4,
// whose 2 KiB stages would otherwise leave too few bytes in flight). kMi = 4 (128 rows) for prefill;
// smaller tiles waste less work when an expert has few rows. Shared-memory rows are 64 bytes with their four
// 16-byte chunks XOR-swizzled, so ldmatrix reads are free of bank conflicts.
//
// The B loader decides the weight format. Bf16Weights copy rows with
// cp.async and read fragments with ldmatrix. Mxfp4Weights copy the raw MXFP4
// blocks (16 bytes and a scale per row and K step: 0.53 bytes a weight) and
// decode each thread's fragment bytes straight into bf16 pairs in registers
// (a 16-entry table, times the power-of-two scale): the dequantisation is
// fused, and no bf16 copy of the weights exists anywhere.
//
// The A row source and the epilogue are the callers' too, so one kernel serves
// dense layers (contiguous rows, bias add) and grouped experts (rows gathered
// through a pair list, SwiGLU or bias epilogue).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/kernels/device_math.cuh"

namespace gptoss::cuda::tiled {

constexpr int kTileN = 128;
template <int kMi>
__host__ __device__ constexpr int tile_m() {
  return 32 * kMi;
}
constexpr int kTileK = 32;
constexpr int kThreads = 256;
constexpr int kRowBytes = kTileK * 2;                 // one bf16 tile row
constexpr int kBf16TileBytes = kTileN * kRowBytes;    // 8 KiB: one bf16 B stage

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Byte offset of 16-byte chunk `c` (0..3) of row `r` in a swizzled tile.
__device__ __forceinline__ uint32_t swizzled(int r, int c) {
  return r * kRowBytes + ((c ^ ((r >> 1) & 3)) << 4);
}

// 16-byte asynchronous copy; `valid` false fills the destination with zeros.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                            uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// Like ldmatrix_x4, each 8x8 matrix transposed (B fragments from row-major [k][n]).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1,
                                                  uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

__device__ __forceinline__ void mma_bf16(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// A warp's share of a C tile: kMi x 4 m16n8k16 accumulators (16 kMi x 32).
template <int kMi>
__device__ __forceinline__ void zero_accumulators(float (&acc)[kMi][4][4]) {
#pragma unroll
  for (int i = 0; i < kMi; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
}

// One K slice of 16: every A fragment times every B fragment.
template <int kMi>
__device__ __forceinline__ void mma_warp_tile(float (&acc)[kMi][4][4], const uint32_t (&a)[kMi][4],
                                              const uint32_t (&b)[4][2]) {
#pragma unroll
  for (int i = 0; i < kMi; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) mma_bf16(acc[i][j], a[i], b[j][0], b[j][1]);
}

// Accumulator (i, j): rows warp_m + 16i + lane/4 (+8), columns
// n0 + warp_n + 8j + 2 (lane % 4) and the next, handed to the epilogue.
template <int kMi, typename Epilogue>
__device__ __forceinline__ void store_accumulators(const float (&acc)[kMi][4][4], int warp_m, int n0,
                                                   const Epilogue& epilogue) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int i = 0; i < kMi; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int r = warp_m + 16 * i + lane / 4, n = n0 + 8 * j + 2 * (lane % 4);
      epilogue(r, n, acc[i][j][0], acc[i][j][1]);
      epilogue(r + 8, n, acc[i][j][2], acc[i][j][3]);
    }
}

// Dense bf16 weights [n_rows, k] (row-major, the checkpoint layout).
struct Bf16Weights {
  const __nv_bfloat16* w;
  int32_t n_rows;
  int32_t k;

  static constexpr int kStageBytes = kBf16TileBytes;
  static constexpr int kStages = 3;

  __device__ __forceinline__ void setup(uint8_t*) const {}

  // Issues the copies of B tile rows n0.. for K step k0 into `stage`.
  __device__ __forceinline__ void load(uint8_t* stage, int n0, int k0) const {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int chunk = threadIdx.x + i * kThreads;
      const int r = chunk / 4, c = chunk % 4;
      const int n = n0 + r;
      const bool ok = n < n_rows;
      cp_async16(smem_addr(stage) + swizzled(r, c),
                 w + static_cast<int64_t>(ok ? n : 0) * k + k0 + c * 8, ok);
    }
  }

  // B fragments of n8 tiles j (0..3) of this warp for K slice kk (0, 1).
  __device__ __forceinline__ void fragments(const uint8_t* stage, const uint8_t*, int warp_n, int kk,
                                            uint32_t (&b)[4][2]) const {
    const int lane = threadIdx.x % kWarpSize;
#pragma unroll
    for (int j = 0; j < 4; j += 2) {
      const int r = warp_n + 8 * j + (lane % 8) + (lane / 16) * 8;
      const int c = kk * 2 + (lane / 8) % 2;
      ldmatrix_x4(smem_addr(stage) + swizzled(r, c), b[j][0], b[j][1], b[j + 1][0], b[j + 1][1]);
    }
  }
};

// One expert's MXFP4 weights [n_rows, k]: a K step of 32 is exactly one block
// per row. A stage holds 128 rows x 16 code bytes, then 128 scale bytes.
struct Mxfp4Weights {
  const uint8_t* blocks;  // [n_rows, k/32, 16]
  const uint8_t* scales;  // [n_rows, k/32]
  int32_t n_rows;
  int32_t k;

  static constexpr int kStageBytes = kTileN * 16 + kTileN;
  static constexpr int kStages = 6;

  // The FP4 code -> bf16 table, in the shared memory after the stages.
  __device__ __forceinline__ void setup(uint8_t* table) const {
    if (threadIdx.x < 16)
      reinterpret_cast<uint16_t*>(table)[threadIdx.x] =
          __bfloat16_as_ushort(__float2bfloat16_rn(fp4_e2m1_value(threadIdx.x)));
  }

  __device__ __forceinline__ void load(uint8_t* stage, int n0, int k0) const {
    if (threadIdx.x < kTileN) {
      const int r = threadIdx.x, n = n0 + r;
      const bool ok = n < n_rows;
      const int64_t block = static_cast<int64_t>(ok ? n : 0) * (k / 32) + k0 / 32;
      cp_async16(smem_addr(stage) + r * 16, blocks + block * 16, ok);
      stage[kTileN * 16 + r] = ok ? scales[block] : 127;  // visible after the stage's barrier
    }
  }

  __device__ __forceinline__ void fragments(const uint8_t* stage, const uint8_t* table, int warp_n,
                                            int kk, uint32_t (&b)[4][2]) const {
    const int lane = threadIdx.x % kWarpSize;
    const uint16_t* lut = reinterpret_cast<const uint16_t*>(table);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      // Thread holds k = 2t, 2t+1 (byte t of this slice) and k + 8 (byte t + 4)
      // of weight row n: exactly one byte each, low nibble first.
      const int r = warp_n + 8 * j + lane / 4, t = lane % 4;
      const uint8_t* row = stage + r * 16 + kk * 8;
      const __nv_bfloat162 scale =
          __bfloat162bfloat162(__float2bfloat16_rn(e8m0_value(stage[kTileN * 16 + r])));
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t byte = row[t + 4 * h];
        const uint32_t pair = lut[byte & 0xf] | (static_cast<uint32_t>(lut[byte >> 4]) << 16);
        const __nv_bfloat162 v = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&pair), scale);
        b[j][h] = *reinterpret_cast<const uint32_t*>(&v);
      }
    }
  }
};

// The plain epilogue: rows begin + r (below end) of y [.., n_cols] get the
// product plus bias (bias bf16 [n_cols], or null).
struct BiasEpilogue {
  float* y;
  const uint16_t* bias;
  int32_t n_cols, begin, end;
  __device__ __forceinline__ void operator()(int r, int n, float v0, float v1) const {
    const int32_t row = begin + r;
    if (row >= end) return;
    float* dst = y + static_cast<int64_t>(row) * n_cols;
    if (n < n_cols) dst[n] = v0 + (bias ? bf16_bits_to_float(bias[n]) : 0.0f);
    if (n + 1 < n_cols) dst[n + 1] = v1 + (bias ? bf16_bits_to_float(bias[n + 1]) : 0.0f);
  }
};

// Shared memory a block of gemm_tile<kMi, Weights> needs (dynamic).
template <int kMi, typename Weights>
constexpr int smem_bytes() {
  return Weights::kStages * (tile_m<kMi>() * kRowBytes + Weights::kStageBytes) + 64;
}

// The block's C tile. `row_src[r]` is the A row of tile row r (negative: no
// row; it reads zeros), n0 the first output column. Calls
// epilogue(r, n, v0, v1) for columns n, n + 1 (n even) of tile row r; n may
// pass the matrix's width, the epilogue bounds-checks.
template <int kMi, typename Weights, typename Epilogue>
__device__ __forceinline__ void gemm_tile(const __nv_bfloat16* a, int64_t lda, const int64_t* row_src,
                                          const Weights& b, int n0, int k, const Epilogue& epilogue) {
  constexpr int kTileM = tile_m<kMi>(), kATileBytes = kTileM * kRowBytes;
  constexpr int kStages = Weights::kStages;
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* a_stages = smem;
  uint8_t* b_stages = smem + kStages * kATileBytes;
  uint8_t* table = b_stages + kStages * Weights::kStageBytes;
  b.setup(table);

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int warp_m = (warp / 4) * 16 * kMi, warp_n = (warp % 4) * 32;

  auto load_stage = [&](int stage, int step) {
    const int k0 = step * kTileK;
    uint8_t* as = a_stages + stage * kATileBytes;
#pragma unroll
    for (int i = 0; i < (kTileM * 4 + kThreads - 1) / kThreads; ++i) {
      const int chunk = threadIdx.x + i * kThreads;
      if (chunk >= kTileM * 4) break;
      const int r = chunk / 4, c = chunk % 4;
      const int64_t src = row_src[r];
      cp_async16(smem_addr(as) + swizzled(r, c), a + (src >= 0 ? src : 0) * lda + k0 + c * 8, src >= 0);
    }
    b.load(b_stages + stage * Weights::kStageBytes, n0, k0);
  };

  float acc[kMi][4][4];
  zero_accumulators(acc);

  const int k_steps = k / kTileK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_steps) load_stage(s, s);
    cp_async_commit();
  }
  for (int step = 0; step < k_steps; ++step) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // this step's stage is in; the stage loaded below is free
    const int next = step + kStages - 1;
    if (next < k_steps) load_stage(next % kStages, next);
    cp_async_commit();

    const int stage = step % kStages;
    const uint8_t* as = a_stages + stage * kATileBytes;
    const uint8_t* bs = b_stages + stage * Weights::kStageBytes;
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
      uint32_t af[kMi][4], bf[4][2];
#pragma unroll
      for (int i = 0; i < kMi; ++i)
        ldmatrix_x4(smem_addr(as) + swizzled(warp_m + 16 * i + lane % 16, kk * 2 + lane / 16), af[i][0],
                    af[i][1], af[i][2], af[i][3]);
      b.fragments(bs, table, warp_n, kk, bf);
      mma_warp_tile(acc, af, bf);
    }
  }
  cp_async_wait<0>();
  store_accumulators(acc, warp_m, n0 + warp_n, epilogue);
}

}  // namespace gptoss::cuda::tiled
