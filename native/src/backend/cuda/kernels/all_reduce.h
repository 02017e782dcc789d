// The one-shot all-reduce of tensor parallelism, fused with the residual add
// and the next RMSNorm (docs/cuda-notes.md, "Tensor parallel").
//
// Each rank's kernel announces the call in every peer's flag array, waits
// until every peer has announced it too, then reads every rank's partial
// (over NVLink, or from the same device when ranks share one) and sums them
// in rank order, so every rank keeps the same residual bits. The call number
// lives in device memory (one counter per block, bumped by the kernel), not
// in a launch argument: a captured CUDA graph replays it unchanged.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/bf16.h"

namespace gptoss::cuda {

constexpr int32_t kMaxTpRanks = 8;
// A fixed grid, because each block's flags and counter are its own. Small, so
// the kernels of two ranks sharing one device are resident together (a
// spinning block never keeps its peer's blocks from running).
constexpr int32_t kAllReduceBlocks = 32;

// What one rank's kernel reads and writes. Pointers into other ranks' memory
// are peer mappings.
struct AllReduceRank {
  int32_t rank = 0;
  int32_t world = 1;
  const float* partials[kMaxTpRanks] = {};  // every rank's partial [n_rows, dim] of this call
  uint32_t* flags[kMaxTpRanks] = {};        // rank q's flags [kMaxTpRanks][kAllReduceBlocks]
  uint32_t* counters = nullptr;             // this rank's calls so far, per block
};

// On every rank, for rows r < n_rows: x[r] += ((p_0[r] + p_1[r]) + ...) (the
// CPU's all_reduce_residual_add), then out[r] = bf16(x[r] / sqrt(mean(x[r]^2)
// + eps) * weight). Every rank of the group launches it with the same n_rows.
// A rank's partial buffer may be rewritten once a later call has completed on
// that rank (its wait proves every peer finished reading), so two consecutive
// calls never share a partial buffer.
void all_reduce_add_rmsnorm(const AllReduceRank& ar, float* x, int32_t n_rows, int32_t dim, const bf16* weight,
                            float eps, bf16* out, cudaStream_t stream);

}  // namespace gptoss::cuda
