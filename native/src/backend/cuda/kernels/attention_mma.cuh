// The tensor-core pieces shared by the prefill and decode attention kernels:
// one warp's 16 query rows (A fragments of q, 64 dims) against K/V tiles in
// shared memory (rows of 64 bf16, swizzled), with the online softmax on the
// accumulator fragments. Lane l holds rows l / 4 (h = 0) and l / 4 + 8
// (h = 1) and, of each n8 tile, keys (or dims) 2 (l % 4) and 2 (l % 4) + 1.
#pragma once

#include <cuda_bf16.h>

#include <cmath>

#include "backend/cuda/kernels/gemm_tiled.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace gptoss::cuda::attention_mma {

constexpr int kHeadDim = 64;
constexpr int kRowBytes = 128;  // one 64-wide bf16 row

// Byte offset of 16-byte chunk `c` (0..7) of row `r`, XOR-swizzled so that
// ldmatrix's 8 rows at one logical chunk hit 8 different bank groups.
__device__ __forceinline__ uint32_t swz(int r, int c) { return r * kRowBytes + ((c ^ (r & 7)) << 4); }

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Issues the cp.async copies of keys k0 .. k0 + n_keys - 1 of one KV head
// (K rows to `k_tile`, V rows to `v_tile`), thread `tid` of `n_threads`;
// keys from `key_end` on are zero-filled, so masked probabilities meet zeros.
// A thread's block-table reads go out kBatch at a time before any copy needs
// them: one dependent read at a time would cost a round trip to L2 each.
__device__ __forceinline__ void load_kv_tile(const KvLayerView& kv, const int32_t* block_table, int kv_head, int32_t k0,
                                             int32_t key_end, int n_keys, uint32_t k_tile, uint32_t v_tile, int tid,
                                             int n_threads) {
  constexpr int kBatch = 4;
  const int chunks = n_keys * 8;  // 16-byte chunks of K (and as many of V)
  for (int n0 = tid; n0 < chunks; n0 += kBatch * n_threads) {
    int64_t row[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int n = n0 + b * n_threads;
      const int32_t key = k0 + n / 8;
      row[b] = n < chunks && key < key_end
                   ? block_table[key / kv.block_size] * kv.block_stride + static_cast<int64_t>(key % kv.block_size) * kv.kv_dim
                   : -1;
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int n = n0 + b * n_threads, j = n / 8, c = n % 8;
      if (n >= chunks) break;
      const bf16* src = kv.pool + (row[b] < 0 ? 0 : row[b]) + kv_head * kHeadDim + c * 8;
      tiled::cp_async16(k_tile + swz(j, c), src + kv.k_offset, row[b] >= 0);
      tiled::cp_async16(v_tile + swz(j, c), src + kv.v_offset, row[b] >= 0);
    }
  }
}

// S = Q K^T for 16 rows x 8 kN8 keys; `k_tile` is the tile's first key row.
template <int kN8>
__device__ __forceinline__ void scores(const uint32_t (&qf)[4][4], uint32_t k_tile, float (&s)[kN8][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kN8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
#pragma unroll
    for (int j = 0; j < kN8; j += 2) {
      uint32_t b0, b1, b2, b3;
      tiled::ldmatrix_x4(k_tile + swz(8 * j + (lane % 8) + (lane / 16) * 8, 2 * kk + (lane / 8) % 2), b0, b1, b2, b3);
      tiled::mma_bf16(s[j], qf[kk], b0, b1);
      tiled::mma_bf16(s[j + 1], qf[kk], b2, b3);
    }
}

// The online softmax over masked scores (-inf): updates each row's running
// max `m` and sum `l`, rescales `o`, and leaves exp(s - max) in `s`.
template <int kN8>
__device__ __forceinline__ void online_softmax(float (&s)[kN8][4], float (&m)[2], float (&l)[2], float (&o)[8][4]) {
  float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int j = 0; j < kN8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
  float scale[2], base[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // 4 lanes share a row
    tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
    tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
    const float m_new = fmaxf(m[h], tile_max[h]);
    base[h] = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet
    scale[h] = expf(m[h] - base[h]);
    m[h] = m_new;
  }
  float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int j = 0; j < kN8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[j][e] = expf(s[j][e] - base[e / 2]);
      row_sum[e / 2] += s[j][e];
    }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
    l[h] = l[h] * scale[h] + row_sum[h];
  }
#pragma unroll
  for (int d = 0; d < 8; ++d)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[d][e] *= scale[e / 2];
}

// O += P V over the tile's 8 kN8 keys: P's accumulator layout is the A layout
// of this product (V fragments through ldmatrix.trans).
template <int kN8>
__device__ __forceinline__ void accumulate_pv(const float (&p)[kN8][4], uint32_t v_tile, float (&o)[8][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int ks = 0; ks < kN8 / 2; ++ks) {  // 16 keys at a time
    const uint32_t pa[4] = {pack_bf16(p[2 * ks][0], p[2 * ks][1]), pack_bf16(p[2 * ks][2], p[2 * ks][3]),
                            pack_bf16(p[2 * ks + 1][0], p[2 * ks + 1][1]),
                            pack_bf16(p[2 * ks + 1][2], p[2 * ks + 1][3])};
#pragma unroll
    for (int dd = 0; dd < 4; ++dd) {  // 16 dims at a time
      uint32_t b0, b1, b2, b3;
      tiled::ldmatrix_x4_trans(v_tile + swz(16 * ks + (lane % 8) + ((lane / 8) % 2) * 8, 2 * dd + lane / 16), b0, b1,
                               b2, b3);
      tiled::mma_bf16(o[2 * dd], pa, b0, b1);
      tiled::mma_bf16(o[2 * dd + 1], pa, b2, b3);
    }
  }
}

}  // namespace gptoss::cuda::attention_mma
