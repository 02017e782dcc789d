// The current device's SM count, for launchers that size a grid to fill the
// GPU exactly once. Read once per process: every GPU a process drives is the
// same model.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"

namespace gptoss::cuda {

inline int32_t multiprocessor_count() {
  static const int32_t count = [] {
    int device = 0, n = 0;
    GPTOSS_CUDA_CHECK(cudaGetDevice(&device));
    GPTOSS_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    return n;
  }();
  return count;
}

}  // namespace gptoss::cuda
