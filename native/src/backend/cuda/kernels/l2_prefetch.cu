// Requests a weight range into L2 ahead of the kernel that reads it
// (GPTOSS_L2_PREFETCH=o, docs/cuda-notes.md "h24gemv"): the decode step's
// attention is latency-bound and leaves DRAM idle for several microseconds a
// layer, while the attention-output GEMV after it streams 23.6 MB (20b) at
// ≈ 2.1 TB/s; prefetched during the attention, it reads them from L2.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/dependent_launch.cuh"
#include "backend/cuda/kernels/kernels.h"
#include "backend/cuda/kernels/sm_count.h"

namespace gptoss::cuda {
namespace {

constexpr int kThreads = 32;
constexpr int64_t kChunk = 16 << 10;  // bytes one bulk prefetch requests

// Issued after the wait: the predecessor (the QKV GEMV, 29.5 MB through L2)
// has finished and cannot evict the range, and the next kernel (the
// attention) starts as the prefetches are issued; they need no completion.
__global__ void __launch_bounds__(kThreads) l2_prefetch_kernel(const uint8_t* p, int64_t bytes) {
  wait_for_previous_kernel();
  allow_next_kernel();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads * kChunk;
  for (int64_t at = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kChunk; at < bytes; at += stride) {
    const uint32_t size = static_cast<uint32_t>(bytes - at < kChunk ? bytes - at : kChunk);
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + at), "r"(size) : "memory");
  }
}

}  // namespace

void l2_prefetch(const void* p, int64_t bytes, cudaStream_t stream) {
  // cp.async.bulk: 16-byte aligned address, a multiple of 16 bytes.
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) throw Error(GPTOSS_ERR_BACKEND, "l2_prefetch: address not 16-byte aligned");
  bytes -= bytes % 16;
  if (bytes <= 0) return;
  const int64_t chunks = (bytes + kChunk - 1) / kChunk;
  const int blocks = static_cast<int>(std::min<int64_t>(multiprocessor_count(), (chunks + kThreads - 1) / kThreads));
  launch_dependent(l2_prefetch_kernel, blocks, kThreads, 0, stream, static_cast<const uint8_t*>(p), bytes);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

}  // namespace gptoss::cuda
