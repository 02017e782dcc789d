// The MXFP4 x bf16 tile product of the expert layers on the warpgroup MMA,
// warp-specialized (GPTOSS_TILED=wgmma_ws; docs/cuda-notes.md "h28ws").
//
// The same product, operands, decode and epilogue contract as
// gemm_mxfp4_wgmma.cuh (128 A rows a block, K steps of 64, each weight
// decoded once per block into a bf16 tile in wgmma's 128-byte swizzle
// layout, the products read both tiles from shared memory). What differs is
// who does what: there, all eight warps copy, decode and issue the products,
// one block-wide barrier a step, and every step waits for its products before
// the next one starts, so the tensor cores idle while the block meets at the
// barrier. Here the block has three warpgroups and 256 weight rows
// (m64n256k16: A is read from shared memory once per 256 columns):
//   - the producer copies the packed codes (kCodeStages - 1 steps ahead)
//     and the scale strip, decodes each step into one of kDecoded tiles and
//     signals it on that tile's `full` mbarrier;
//   - two consumers (64 A rows each) wait for a decoded tile, issue its four
//     products and leave them in flight while they wait for the next tile
//     (wgmma.wait_group 1), so the tensor cores have the next step queued;
//     once a step's products are done, each consumer warp releases the
//     decoded tile on its `empty` mbarrier; each warpgroup copies its own 64
//     A rows (kAStages stages, two steps ahead) and meets at a named barrier
//     of its 128 threads a step (no barrier between warpgroups for A).
// One block an SM: two of 384 threads would have 80 registers each, and a
// product with 64 accumulators needs at least 90 (ptxas allocates the whole
// kernel within the launch bound, setmaxnreg notwithstanding).
#pragma once

#include "backend/cuda/kernels/gemm_mxfp4_wgmma.cuh"

namespace gptoss::cuda::wgmma_ws {

using decoded::kStepK;
using decoded::Mxfp4Weights;

constexpr int kWarpgroupThreads = 128;
constexpr int kThreads = 3 * kWarpgroupThreads;  // the producer, then two consumers
constexpr int kConsumerRows = 64;                // A rows of a consumer warpgroup
constexpr int kWarpRows = kConsumerRows / 4;     // A rows a consumer warp copies

// Named barriers (0 is __syncthreads): the producer's one (the scale strip),
// one per consumer warpgroup (its A stage is in).
constexpr int kProducerBarrier = 1;
constexpr int kConsumerBarrier = 2;

struct Pipeline {
  static constexpr int kN = 256;
  static constexpr int kAStages = 4;     // a consumer's A rows, copied kALead steps ahead
  static constexpr int kALead = kAStages - 2;  // the stage of step s - 2 is free once the warpgroup met at step s
  static constexpr int kDecoded = 3;     // decoded tiles: the producer decodes one step past the two in flight
  static constexpr int kCodeStages = 4;  // packed codes, copied kCodeStages - 1 steps before their decode
  static constexpr int kPackedBytes = kN * decoded::kPackedRowBytes;
  static constexpr int kDecodedBytes = kN * decoded::kRowBytes;
  static constexpr int kBlocksPerSm = 1;
  static_assert(kDecoded >= 2, "the producer may wait only for tiles released before its last signal");
};

constexpr int strip_bytes(int k) { return (Pipeline::kN * (k / 32) + 7) / 8 * 8; }

// Dynamic shared memory of a block for K = k: 1 KiB to align the tiles to
// the swizzle pattern's 1 024 bytes, the A stages, the decoded tiles, the
// packed codes, the scale strip, the full and empty mbarriers of each
// decoded tile.
constexpr int smem_bytes(int k) {
  using P = Pipeline;
  return 1024 + P::kAStages * wgmma::kATileBytes + P::kDecoded * P::kDecodedBytes +
         P::kCodeStages * P::kPackedBytes + strip_bytes(k) + 2 * P::kDecoded * 8;
}
// A block's most (227 KiB) at the largest K, with the tile kernel's 1 KiB of row sources.
static_assert(smem_bytes(decoded::kMaxK) + 1024 <= 227 * 1024);

__device__ __forceinline__ void barrier_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(tiled::smem_addr(bar)), "r"(count) : "memory");
}
// Release: this thread's earlier writes are visible to whoever waits for the phase.
__device__ __forceinline__ void barrier_arrive(uint64_t* bar) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(
                   tiled::smem_addr(bar))
               : "memory");
}
// Acquire: returns once the phase of this parity has completed.
__device__ __forceinline__ void barrier_wait(uint64_t* bar, int parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(tiled::smem_addr(bar)), "r"(parity)
        : "memory");
  } while (!done);
}
// The warpgroup's threads meet at named barrier kId (an immediate: with a
// register id ptxas reserves all 16 barriers).
template <int kId>
__device__ __forceinline__ void warpgroup_barrier() {
  asm volatile("bar.sync %0, %1;\n" ::"n"(kId), "n"(kWarpgroupThreads) : "memory");
}

// The block's shared memory, carved as smem_bytes lays it out.
struct Tiles {
  uint8_t* a_stages;  // [kAStages][128 rows]
  uint8_t* decoded;   // [kDecoded][kN rows]
  uint8_t* packed;    // [kCodeStages][kN rows x 2 blocks]
  uint8_t* scales;    // [rows][k / 32]
  uint64_t* full;     // [kDecoded]: the producer's 128 threads have written the tile
  uint64_t* empty;    // [kDecoded]: every consumer warp's products have read it

  __device__ __forceinline__ explicit Tiles(int k) {
    using P = Pipeline;
    extern __shared__ __align__(128) uint8_t smem_raw[];
    a_stages = smem_raw + (1024 - tiled::smem_addr(smem_raw) % 1024) % 1024;
    decoded = a_stages + P::kAStages * wgmma::kATileBytes;
    packed = decoded + P::kDecoded * P::kDecodedBytes;
    scales = packed + P::kCodeStages * P::kPackedBytes;
    full = reinterpret_cast<uint64_t*>(scales + strip_bytes(k));
    empty = full + P::kDecoded;
  }
};

// The producer warpgroup (thread t of 128): thread t copies MXFP4 blocks
// b = t + 128 i of each step (rows b / 2, block b % 2) and decodes the blocks
// it copied, so only the scale strip needs a barrier. Decoded tile
// s % kDecoded is rewritten once every consumer warp has released step
// s - kDecoded.
__device__ __forceinline__ void produce(const Tiles& tiles, const Mxfp4Weights& w, int n0, int k_steps, int t) {
  using P = Pipeline;
  constexpr int kBlocksPerThread = P::kN * 2 / kWarpgroupThreads;
  const int k_blocks = w.k / 32, rows = min(P::kN, w.n_rows - n0);
  // The scale strip travels with the first commit group.
  decoded::copy_strip(tiles.scales, w.scales + static_cast<int64_t>(n0) * k_blocks, rows * k_blocks, t,
                      kWarpgroupThreads);
  auto load_codes = [&](int step) {
    if (step >= k_steps) return;
    uint8_t* slot = tiles.packed + (step % P::kCodeStages) * P::kPackedBytes;
#pragma unroll
    for (int i = 0; i < kBlocksPerThread; ++i) {
      const int b = t + i * kWarpgroupThreads;
      decoded::load_packed_block(slot + b * 16, w, n0, rows, b / 2, b % 2, step * kStepK);
    }
  };
  // Commit group j holds the codes of step j (and group 0 the strip).
  for (int step = 0; step < P::kCodeStages - 1; ++step) {
    load_codes(step);
    tiled::cp_async_commit();
  }
  for (int step = 0; step < k_steps; ++step) {
    load_codes(step + P::kCodeStages - 1);  // into the slot decoded last step
    tiled::cp_async_commit();
    tiled::cp_async_wait<P::kCodeStages - 1>();  // this thread's codes of `step` are in
    if (step == 0) warpgroup_barrier<kProducerBarrier>();  // and every thread's strip
    // Every block's codes and scale first, before the wait for a free tile:
    // one shared-memory latency a step, not one per block (each decode
    // branches on its scale).
    const uint8_t* codes = tiles.packed + (step % P::kCodeStages) * P::kPackedBytes;
    uint4 block_codes[kBlocksPerThread];
    uint32_t block_scales[kBlocksPerThread];
#pragma unroll
    for (int i = 0; i < kBlocksPerThread; ++i) {
      const int b = t + i * kWarpgroupThreads;
      block_codes[i] = *reinterpret_cast<const uint4*>(codes + b * 16);
      block_scales[i] = decoded::block_scale(tiles.scales, rows, k_blocks, step, b / 2, b % 2);
    }
    const int slot = step % P::kDecoded;
    if (step >= P::kDecoded) barrier_wait(tiles.empty + slot, (step / P::kDecoded - 1) & 1);
    uint8_t* out = tiles.decoded + slot * P::kDecodedBytes;
#pragma unroll
    for (int i = 0; i < kBlocksPerThread; ++i) {
      const int b = t + i * kWarpgroupThreads;
      decoded::decode_codes(block_codes[i], block_scales[i], b / 2, b % 2, out);
    }
    wgmma::fence_proxy_async();  // the decoded weights, before the products read them
    barrier_arrive(tiles.full + slot);
  }
}

// Consumer warpgroup `consumer` (0, 1; thread t of 128): A rows 64 consumer
// .. + 63 times the decoded tiles, one step's four products left in flight.
// Warp w copies A rows 16 w .. + 15 of the warpgroup's. At step s the copies
// of step s + 2 overwrite step s - 2's stage: every warp of the warpgroup has
// waited for step s - 2's products (wait_group 1 in step s - 1) before the
// warpgroup's barrier of step s.
template <typename Epilogue>
__device__ __forceinline__ void consume(const Tiles& tiles, const __nv_bfloat16* a, int64_t lda,
                                        const int64_t* row_src, int k, int k_steps, int consumer, int t, int n0,
                                        const Epilogue& epilogue) {
  using P = Pipeline;
  const int warp = t / kWarpSize, lane = t % kWarpSize;
  const int warp_row = consumer * kConsumerRows + warp * kWarpRows;  // of the block's 128
  auto load_a = [&](int step) {
    if (step < k_steps)
      decoded::load_a_step<kWarpRows, kWarpSize>(
          tiles.a_stages + (step % P::kAStages) * wgmma::kATileBytes + warp_row * decoded::kRowBytes, a, lda,
          row_src + warp_row, step * kStepK, k, lane);
    tiled::cp_async_commit();
  };

  float acc[P::kN / 2];
#pragma unroll
  for (int i = 0; i < P::kN / 2; ++i) acc[i] = 0.0f;

  // Commit group j holds this thread's A copies of step j.
  for (int step = 0; step < P::kALead; ++step) load_a(step);
  for (int step = 0; step < k_steps; ++step) {
    tiled::cp_async_wait<P::kALead - 1>();
    wgmma::fence_proxy_async();
    if (consumer == 0)  // the warpgroup's A rows of `step` are in
      warpgroup_barrier<kConsumerBarrier>();
    else
      warpgroup_barrier<kConsumerBarrier + 1>();
    const int slot = step % P::kDecoded;
    barrier_wait(tiles.full + slot, (step / P::kDecoded) & 1);
    const uint32_t a_tile = tiled::smem_addr(tiles.a_stages + (step % P::kAStages) * wgmma::kATileBytes) +
                            consumer * kConsumerRows * decoded::kRowBytes;
    const uint32_t b_tile = tiled::smem_addr(tiles.decoded + slot * P::kDecodedBytes);
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kStepK / 16; ++kk)
      wgmma::mma_async(acc, wgmma::descriptor(a_tile + 32 * kk), wgmma::descriptor(b_tile + 32 * kk));
    wgmma::commit();
    load_a(step + P::kALead);  // into step - 2's stage, while the products run
    wgmma::wait<1>();          // step - 1's products are done: its decoded tile is free
    if (step > 0 && lane == 0) barrier_arrive(tiles.empty + (step - 1) % P::kDecoded);
  }
  wgmma::wait<0>();
  wgmma::fence_operands(acc);
  tiled::cp_async_wait<0>();
  // Accumulator 4j + e: row 16 warp + lane / 4 (+ 8 for e >= 2), columns
  // 8j + 2 (lane % 4) (+ 1 for odd e) of the warpgroup's 64 x kN.
  const int r = warp_row + lane / 4;
#pragma unroll
  for (int j = 0; j < P::kN / 8; ++j) {
    const int n = n0 + 8 * j + 2 * (lane % 4);
    epilogue(r, n, acc[4 * j], acc[4 * j + 1]);
    epilogue(r + 8, n, acc[4 * j + 2], acc[4 * j + 3]);
  }
}

// The block's C tile (128 A rows x 256 weight rows) of one expert's MXFP4
// weights; arguments and contract as decoded::gemm_tile, kThreads threads. A
// consumer warpgroup whose 64 rows are all past valid_rows (>= 1) exits at
// once and is not counted on the empty barriers.
template <typename Epilogue>
__device__ __forceinline__ void gemm_tile(const __nv_bfloat16* a, int64_t lda, const int64_t* row_src, int valid_rows,
                                          const Mxfp4Weights& w, int n0, const Epilogue& epilogue) {
  using P = Pipeline;
  const Tiles tiles(w.k);
  const int k_steps = (w.k + kStepK - 1) / kStepK;
  const int consumers = valid_rows > kConsumerRows ? 2 : 1;
  if (threadIdx.x == 0) {
    for (int i = 0; i < P::kDecoded; ++i) {
      barrier_init(tiles.full + i, kWarpgroupThreads);
      barrier_init(tiles.empty + i, consumers * kWarpgroupThreads / kWarpSize);
    }
  }
  __syncthreads();  // the barriers are initialized; the last block-wide barrier
  const int warpgroup = threadIdx.x / kWarpgroupThreads, t = threadIdx.x % kWarpgroupThreads;
  if (warpgroup == 0)
    produce(tiles, w, n0, k_steps, t);
  else if (warpgroup <= consumers)
    consume(tiles, a, lda, row_src, w.k, k_steps, warpgroup - 1, t, n0, epilogue);
}

}  // namespace gptoss::cuda::wgmma_ws
