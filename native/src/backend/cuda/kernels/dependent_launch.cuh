// Programmatic dependent launch (sm_90) for the small decode kernels: such a
// kernel may start while the kernel before it in the stream is finishing,
// issue its loads of weights (which no kernel writes) and then wait for that
// kernel's results. At batch 1 a step is ~250 short kernels, each paying a
// launch and a first memory latency before it streams anything; this overlaps
// both with the previous kernel's tail. Works inside CUDA graphs.
//
// The contract of a kernel launched by launch_dependent:
// - before wait_for_previous_kernel() it reads only what the kernels before
//   the previous one wrote (weights; the MoE grouping in the down product),
//   and writes nothing;
// - it calls allow_next_kernel() right after the wait, so that when the next
//   kernel starts, this one's predecessor has finished (the first point holds).
// On unless GPTOSS_PDL=0: call 22 (H100, both arms the same short bench)
// measured a batch-1 step at 2.76 ms with it and 2.92 ms without, batch 8
// 8.16 vs 8.17 ms. (Call 19's "slower" compared arms with different metadata
// copies, docs/cuda-notes.md "h22gemv".) Plain launches make both device
// calls no-ops.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"

namespace gptoss::cuda {

__device__ __forceinline__ void wait_for_previous_kernel() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

__device__ __forceinline__ void allow_next_kernel() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

inline bool dependent_launch_enabled() {
  static const bool enabled = [] {
    const char* choice = std::getenv("GPTOSS_PDL");
    return choice == nullptr || std::strcmp(choice, "0") != 0;
  }();
  return enabled;
}

template <typename... Params, typename... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                      Args... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = dependent_launch_enabled() ? 1 : 0;
  GPTOSS_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...));
}

}  // namespace gptoss::cuda
