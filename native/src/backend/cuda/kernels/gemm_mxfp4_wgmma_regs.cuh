// The MXFP4 x bf16 tile product of the expert layers on the warpgroup MMA
// with the weights as its register operand (GPTOSS_TILED=wgmma_regs;
// docs/cuda-notes.md "h24prefill").
//
// The product computed transposed: C^T = W X^T, the block's 128 weight rows
// the MMA's M (two warpgroups of 64, each warp 16 rows), its 128 grouped
// pairs the N. Each warp decodes its own 16 weight rows straight into the
// registers of wgmma's A fragment (the mma.sync m16n8k16 A layout), so no
// decoded tile is written to shared memory or read back, and a weight is
// still decoded once per block. The token rows are the B operand, copied
// into the swizzled 128-byte-row tiles the other kernels use for A.
//
// Fragment rows are ordered so that the epilogue gets both columns of a
// pair (gate and up): M row g (0..7) of a warp is its weight row 2g, M row
// g + 8 is weight row 2g + 1; thread (g = lane / 4, t = lane % 4) then holds
// C^T (2g, tokens 8j + 2t, + 1) and (2g + 1, the same tokens).
//
// Per 16-wide K slice: issue its product from one register fragment, wait
// for the slice before it, decode the next slice into that one's registers
// (two fragments alternate): the tensor cores always have a slice queued.
// One barrier per K step of 64 for the copies.
#pragma once

#include "backend/cuda/kernels/gemm_mxfp4_wgmma.cuh"

namespace gptoss::cuda::wgmma::regs {

constexpr int kTileN = 128;                                   // weight rows a block (M)
constexpr int kTokenStages = 4, kLeadTokens = 2;              // a slice's product may run past the next barrier
constexpr int kPackedStages = 4, kLeadPacked = 3;             // a step's codes are read until its last slice
constexpr int kPackedBytes = kTileN * decoded::kPackedRowBytes;  // 4 KiB
// At the barrier of step s: the tokens of s and the codes of s + 1 are in.
constexpr int kPendingGroups = (kLeadTokens < kLeadPacked - 1 ? kLeadTokens : kLeadPacked - 1) - 1;

constexpr int smem_bytes(int k) {
  return 1024 + kTokenStages * kATileBytes + kPackedStages * kPackedBytes + kTileN * (k / 32);
}

// 16-byte slot of MXFP4 block h of tile row r in a packed stage: the eight
// rows a warp reads together (2g, or 2g + 1) in consecutive slots, one
// shared-memory wavefront.
__device__ __forceinline__ int packed_slot(int r, int h) { return h * kTileN + (r % 2) * (kTileN / 2) + r / 2; }

// The block's C tile (the first kTokens of its 128 token rows x 128 weight
// rows), contract as decoded::gemm_tile: the token rows are the N of every
// warp, so a tile of at most 64 pairs takes the n64 products (half the
// tensor work) and the first 64 token rows only.
template <int kTokens, typename Epilogue>
__device__ __forceinline__ void gemm_tile(const __nv_bfloat16* a, int64_t lda, const int64_t* row_src,
                                          const Mxfp4Weights& w, int n0, const Epilogue& epilogue) {
  static_assert(kTokens == 64 || kTokens == 128, "m64n64k16 or m64n128k16");
  extern __shared__ __align__(128) uint8_t smem_raw[];
  uint8_t* smem = smem_raw + (1024 - tiled::smem_addr(smem_raw) % 1024) % 1024;
  uint8_t* tokens = smem;
  uint8_t* packed = tokens + kTokenStages * kATileBytes;
  uint8_t* scales = packed + kPackedStages * kPackedBytes;
  const int k_blocks = w.k / 32, rows = min(kTileN, w.n_rows - n0);
  const int k_steps = (w.k + kStepK - 1) / kStepK;

  decoded::copy_strip(scales, w.scales + static_cast<int64_t>(n0) * k_blocks, rows * k_blocks);

  auto load = [&](int j) {  // commit group j: the tokens of j + kLeadTokens, the codes of j + kLeadPacked
    const int t_step = j + kLeadTokens, p_step = j + kLeadPacked;
    if (t_step >= 0 && t_step < k_steps)
      decoded::load_a_step<kTokens>(tokens + (t_step % kTokenStages) * kATileBytes, a, lda, row_src,
                                    t_step * kStepK, w.k);
    if (p_step < k_steps) {
      const int r = threadIdx.x / 2, h = threadIdx.x % 2;
      decoded::load_packed_block(packed + (p_step % kPackedStages) * kPackedBytes + packed_slot(r, h) * 16, w, n0,
                                 rows, r, h, p_step * kStepK);
    }
    tiled::cp_async_commit();
  };

  const int warpgroup = threadIdx.x / 128, warp = (threadIdx.x / kWarpSize) % 4, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const int r0 = warpgroup * 64 + 16 * warp + 2 * g;  // this thread's weight rows: r0 (M row g), r0 + 1 (g + 8)
  const uint32_t gather = t | ((t + 4) << 4);         // byte t of two words into bytes 0, 1

  // The two bf16 factors of rows r0, r0 + 1 and block h of a step: one
  // multiply by 2^126 * 2^(s - 127) for scale bytes s <= 128, else 2^126
  // then 2^(s - 127) (decoded::decode_block's products); the second
  // multiply runs for the whole warp when any lane needs it (x 1.0 exact).
  uint32_t first[2][2], second[2][2];
  bool two_multiplies = false;
  auto step_scales = [&](int step) {
    bool any = false;
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = r0 + i, b = 2 * step + h;
        const uint32_t s = r < rows && b < k_blocks ? scales[r * k_blocks + b] : 127;
        first[i][h] = s <= 128 ? s + 126 : 253;
        second[i][h] = s <= 128 ? 127 : s;
        any |= s > 128;
      }
    two_multiplies = __any_sync(0xffffffffu, any);
  };
  // Slice kk (0..3) of a step: block kk / 2, bytes 8 (kk % 2) .. + 7 of
  // each row; thread t needs byte t (k 2t, 2t + 1) and byte 4 + t (+ 8).
  auto decode_slice = [&](int step, int kk, uint32_t (&frag)[4]) {
    const int h = kk / 2;
    const uint8_t* slot = packed + (step % kPackedStages) * kPackedBytes + (kk % 2) * 8;
    const uint2 w0 = *reinterpret_cast<const uint2*>(slot + packed_slot(r0, h) * 16);
    const uint2 w1 = *reinterpret_cast<const uint2*>(slot + packed_slot(r0 + 1, h) * 16);
    const uint32_t codes = __byte_perm(__byte_perm(w0.x, w0.y, gather), __byte_perm(w1.x, w1.y, gather), 0x5410);
    uint32_t pairs[4];  // row r0 k 2t, row r0 k 2t + 8, row r0 + 1 k 2t, row r0 + 1 k 2t + 8
    decoded::fp4x8_to_bf16_times_2_pow_m126(codes, pairs);
    constexpr int kRow[4] = {0, 0, 1, 1}, kReg[4] = {0, 2, 1, 3};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      __nv_bfloat162 v = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&pairs[i]),
                                 decoded::bf16x2_from_bits(first[kRow[i]][h] << 7));
      if (two_multiplies) v = __hmul2(v, decoded::bf16x2_from_bits(second[kRow[i]][h] << 7));
      frag[kReg[i]] = *reinterpret_cast<const uint32_t*>(&v);
    }
  };

  float acc[kTokens / 2];
#pragma unroll
  for (int i = 0; i < kTokens / 2; ++i) acc[i] = 0.0f;
  uint32_t frag_a[4], frag_b[4];

  for (int j = -kLeadPacked; j < 0; ++j) load(j);
  tiled::cp_async_wait<kLeadPacked - 1>();
  __syncthreads();  // the scale strip and step 0's codes are in
  step_scales(0);
  decode_slice(0, 0, frag_a);

  for (int step = 0; step < k_steps; ++step) {
    tiled::cp_async_wait<kPendingGroups>();
    fence_proxy_async();
    // The tokens of step are in and visible to the products; the slots
    // written below were last read by products and decodes that are done.
    __syncthreads();
    load(step);
    const uint32_t tile = tiled::smem_addr(tokens + (step % kTokenStages) * kATileBytes);
    // Slice kk's product, then (the one before it done) the next slice's
    // decode into the other fragment.
#pragma unroll
    for (int kk = 0; kk < kStepK / 16; ++kk) {
      uint32_t(&cur)[4] = kk % 2 == 0 ? frag_a : frag_b;
      uint32_t(&next)[4] = kk % 2 == 0 ? frag_b : frag_a;
      fence();
      mma_async(acc, cur, descriptor(tile + 32 * kk));
      commit();
      wait<1>();
      if (kk + 1 < kStepK / 16) {
        decode_slice(step, kk + 1, next);
      } else if (step + 1 < k_steps) {
        step_scales(step + 1);
        decode_slice(step + 1, 0, next);
      }
    }
  }
  wait<0>();
  fence_operands(acc);
  tiled::cp_async_wait<0>();
  // Accumulator 4j + e: M row g (weight r0) for e < 2, g + 8 (r0 + 1)
  // otherwise; token 8j + 2t + e % 2.
#pragma unroll
  for (int j = 0; j < kTokens / 8; ++j) {
    const int r = 8 * j + 2 * t, n = n0 + r0;
    epilogue(r, n, acc[4 * j], acc[4 * j + 2]);
    epilogue(r + 1, n, acc[4 * j + 1], acc[4 * j + 3]);
  }
}

}  // namespace gptoss::cuda::wgmma::regs
