// Device helpers shared by the kernels: bf16 loads, warp/block reductions and
// MXFP4 decoding. Kept tiny and header-only so each kernel file stays readable.
#pragma once

#include <cuda_bf16.h>
#include <cstdint>

namespace gptoss::cuda {

constexpr int kWarpSize = 32;

__device__ __forceinline__ float bf16_bits_to_float(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

// Eight bf16 values packed in 16 bytes -> eight floats.
__device__ __forceinline__ void unpack_bf16x8(const uint4& v, float* out) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(words[i] << 16);
    out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Block-wide reduction with `op` over all threads (blockDim.x a multiple of
// 32, at most 1024); every thread gets the result. `scratch` holds 32 values
// of shared memory.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, T* scratch, T identity, Op op) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int n_warps = blockDim.x / kWarpSize;
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1)
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : identity;
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1)
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__device__ __forceinline__ float block_sum(float v, float* scratch) {
  return block_reduce(v, scratch, 0.0f, [](float a, float b) { return a + b; });
}

// For a kernel whose last block to finish does the step that needs every
// block's output (no second launch): each block calls it once, with all its
// threads, after its global writes; it returns true in the one block that
// arrives last, which may then read all blocks' writes (with loads past L1,
// e.g. __ldcg). `counter` starts at zero and is left at zero for the next
// launch.
__device__ __forceinline__ bool last_block_to_finish(int32_t* counter, int32_t n_blocks) {
  __shared__ bool last;
  __threadfence();  // this block's writes reach L2 before its count
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(counter, 1) == n_blocks - 1;
    if (last) *counter = 0;
  }
  __syncthreads();
  if (last) __threadfence();
  return last;
}

// E8M0 scale byte -> 2^(s - 127), exact (s = 0 is the subnormal 2^-127).
__device__ __forceinline__ float e8m0_value(uint8_t s) {
  return s == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(static_cast<uint32_t>(s) << 23);
}

}  // namespace gptoss::cuda
