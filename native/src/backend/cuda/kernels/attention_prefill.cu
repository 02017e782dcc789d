// Prefill attention on tensor cores (flash-attention style) over the paged KV
// cache, with learned sinks and sliding windows.
//
// A block serves one KV head for a tile of kPrefillQueryTile tokens of one
// chunk. Its rows are the (token, query head) pairs that share the KV head, 16
// per warp, so each K/V tile read from the cache serves every query head of
// the group. Per tile of 64 keys: S = Q K^T (mma.sync m16n8k16, bf16 in,
// float out; q pre-scaled by 1/sqrt(64)), masking (causal, window), online
// softmax on the accumulator fragments, P cast to bf16 in place as the A
// operand of O += P V (V fragments through ldmatrix.trans). The next tile's
// K/V load (cp.async, two stages) overlaps this tile's math: an extend step
// of a few query tiles over a long cached prefix is one long walk per block.
// The sink joins the denominator at the end.
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/device_math.cuh"
#include "backend/cuda/kernels/attention_mma.cuh"
#include "backend/cuda/kernels/kernels.h"

namespace gptoss::cuda {
namespace {

using attention_mma::kHeadDim;
using attention_mma::kRowBytes;
using attention_mma::pack_bf16;
using attention_mma::swz;
using tiled::ldmatrix_x4;
using tiled::smem_addr;

constexpr int kKeys = 64;  // keys per tile
constexpr int kMaxRows = kPrefillQueryTile * 16;

__global__ void __launch_bounds__(kMaxRows / 16 * kWarpSize)
    attention_prefill_kernel(AttentionArgs args, QueryTiles tiles) {
  __shared__ __align__(128) uint8_t q_s[kMaxRows * kRowBytes];
  __shared__ __align__(128) uint8_t kv_s[2][2][kKeys * kRowBytes];  // [stage][K, V]

  const int group = args.n_q_heads / args.n_kv_heads;
  const int rows = kPrefillQueryTile * group;  // row = token * group + head
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int kv_head = blockIdx.y;
  const int32_t first = tiles.first_token[blockIdx.x], n_tokens = tiles.n_tokens[blockIdx.x];
  const TokenPlacement& tok = args.tokens;
  const KvLayerView& kv = args.kv;

  // Q rows in bf16, times 1/sqrt(head_dim) (exact: a power of two).
  for (int i = threadIdx.x; i < rows * 8; i += blockDim.x) {
    const int r = i / 8, c = i % 8, t = r / group, h = r % group;
    uint4 packed = make_uint4(0, 0, 0, 0);
    if (t < n_tokens) {
      const float* src = args.qkv + static_cast<int64_t>(first + t) * args.qkv_stride +
                         (kv_head * group + h) * kHeadDim + c * 8;
      const float4 a = *reinterpret_cast<const float4*>(src);
      const float4 b = *reinterpret_cast<const float4*>(src + 4);
      packed = make_uint4(pack_bf16(a.x * 0.125f, a.y * 0.125f), pack_bf16(a.z * 0.125f, a.w * 0.125f),
                          pack_bf16(b.x * 0.125f, b.y * 0.125f), pack_bf16(b.z * 0.125f, b.w * 0.125f));
    }
    *reinterpret_cast<uint4*>(q_s + swz(r, c)) = packed;
  }
  __syncthreads();
  uint32_t qf[4][4];  // A fragments of this warp's 16 rows, 4 slices of 16 dims
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    ldmatrix_x4(smem_addr(q_s) + swz(16 * warp + lane % 16, 2 * kk + lane / 16), qf[kk][0], qf[kk][1],
                qf[kk][2], qf[kk][3]);

  // This thread's two rows: r0 = 16 warp + lane / 4 and r0 + 8.
  int32_t pos[2], lo[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int t = (16 * warp + lane / 4 + 8 * h) / group;
    pos[h] = t < n_tokens ? tok.token_pos[first + t] : -1;
    lo[h] = pos[h] < 0 ? 0 : (args.sliding_window > 0 ? max(0, pos[h] - args.sliding_window + 1) : 0);
  }
  const int32_t first_pos = tok.token_pos[first];
  const int32_t key_begin = args.sliding_window > 0 ? max(0, first_pos - args.sliding_window + 1) : 0;
  const int32_t key_end = tok.token_pos[first + n_tokens - 1] + 1;
  const int32_t* table =
      tok.block_tables + static_cast<int64_t>(tok.token_chunk[first]) * tok.max_blocks;

  float o[8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  const auto load = [&](int32_t k0, int stage) {
    attention_mma::load_kv_tile(kv, table, kv_head, k0, key_end, kKeys, smem_addr(kv_s[stage][0]),
                                smem_addr(kv_s[stage][1]), threadIdx.x, blockDim.x);
    tiled::cp_async_commit();
  };
  load(key_begin, 0);
  for (int32_t k0 = key_begin, i = 0; k0 < key_end; k0 += kKeys, ++i) {
    __syncthreads();  // tile i - 1's stage is consumed: it takes tile i + 1
    if (k0 + kKeys < key_end)
      load(k0 + kKeys, (i + 1) % 2);
    else
      tiled::cp_async_commit();  // an empty group keeps the wait count uniform
    tiled::cp_async_wait<1>();
    __syncthreads();

    float s[8][4];
    attention_mma::scores(qf, smem_addr(kv_s[i % 2][0]), s);
    // Causal and window masks.
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2;
        const int32_t key = k0 + 8 * j + 2 * (lane % 4) + (e % 2);
        if (key < lo[h] || key > pos[h]) s[j][e] = -INFINITY;
      }
    attention_mma::online_softmax(s, m, l, o);
    attention_mma::accumulate_pv(s, smem_addr(kv_s[i % 2][1]), o);
  }

  // out = O / (l + exp(sink - m)), rescaled to the common maximum.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (pos[h] < 0) continue;
    const int r = 16 * warp + lane / 4 + 8 * h;
    const int head = kv_head * group + r % group;
    const float sink = bf16_bits_to_float(args.sinks[head]);
    const float mf = fmaxf(m[h], sink);
    const float rs = expf(m[h] - mf);
    const float inv = rs / (l[h] * rs + expf(sink - mf));
    __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(
        args.out + static_cast<int64_t>(first + r / group) * args.n_q_heads * kHeadDim + head * kHeadDim);
#pragma unroll
    for (int d = 0; d < 8; ++d)
      dst[4 * d + lane % 4] = __floats2bfloat162_rn(o[d][2 * h] * inv, o[d][2 * h + 1] * inv);
  }
}

}  // namespace

void attention_prefill(const AttentionArgs& args, const QueryTiles& tiles, cudaStream_t stream) {
  check_attention_shape(args);
  if (tiles.n_tiles == 0) return;
  const int group = args.n_q_heads / args.n_kv_heads;
  const dim3 grid(tiles.n_tiles, args.n_kv_heads, 1);
  attention_prefill_kernel<<<grid, kPrefillQueryTile * group / 16 * kWarpSize, 0, stream>>>(args, tiles);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

}  // namespace gptoss::cuda
