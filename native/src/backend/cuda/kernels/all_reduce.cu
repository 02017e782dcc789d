#include "backend/cuda/kernels/all_reduce.h"

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/rmsnorm_row.cuh"

namespace gptoss::cuda {
namespace {

__device__ __forceinline__ void store_release_sys(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ uint32_t load_acquire_sys(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// A peer that never arrives (a rank that failed, or kernels serialized as
// under compute-sanitizer) would spin forever; after this long the kernel
// traps instead, so the failure surfaces as a CUDA error.
constexpr uint64_t kPeerWaitLimitNs = 10'000'000'000ull;

__global__ void __launch_bounds__(kNormThreads) all_reduce_add_rmsnorm_kernel(AllReduceRank ar, float* x, int32_t n_rows,
                                                                         int32_t dim, const uint16_t* weight, float eps,
                                                                         __nv_bfloat16* out) {
  __shared__ float scratch[32];
  if (threadIdx.x == 0) {
    const uint32_t call = ar.counters[blockIdx.x] + 1;
    ar.counters[blockIdx.x] = call;
    for (int32_t q = 0; q < ar.world; ++q) {
      if (q != ar.rank) store_release_sys(ar.flags[q] + ar.rank * kAllReduceBlocks + blockIdx.x, call);
    }
    // A peer is at most one call ahead; the signed difference survives wrap.
    for (int32_t q = 0; q < ar.world; ++q) {
      if (q == ar.rank) continue;
      const uint32_t* flag = ar.flags[ar.rank] + q * kAllReduceBlocks + blockIdx.x;
      const uint64_t start = global_ns();
      while (static_cast<int32_t>(load_acquire_sys(flag) - call) < 0) {
        if (global_ns() - start > kPeerWaitLimitNs) __trap();
      }
    }
  }
  __syncthreads();
  for (int32_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
    const int64_t offset = static_cast<int64_t>(row) * dim;
    float4* xr = reinterpret_cast<float4*>(x + offset);
    const auto load = [&](int32_t idx) {
      // Bypass L1: a peer's buffer changes between calls behind this SM's back.
      float4 sum = __ldcg(reinterpret_cast<const float4*>(ar.partials[0] + offset) + idx);
      for (int32_t q = 1; q < ar.world; ++q) {
        const float4 p = __ldcg(reinterpret_cast<const float4*>(ar.partials[q] + offset) + idx);
        sum.x += p.x, sum.y += p.y, sum.z += p.z, sum.w += p.w;
      }
      float4 v = xr[idx];
      v.x += sum.x, v.y += sum.y, v.z += sum.z, v.w += sum.w;
      return v;
    };
    residual_rmsnorm_row(load, xr, dim, weight, eps, out + offset, scratch);
  }
}

}  // namespace

void all_reduce_add_rmsnorm(const AllReduceRank& ar, float* x, int32_t n_rows, int32_t dim, const bf16* weight,
                            float eps, bf16* out, cudaStream_t stream) {
  if (!norm_dim_supported(dim)) {
    throw Error(GPTOSS_ERR_BACKEND, "all_reduce_add_rmsnorm: dim must be a multiple of 4 and at most 4096");
  }
  if (ar.world < 1 || ar.world > kMaxTpRanks || ar.rank < 0 || ar.rank >= ar.world) {
    throw Error(GPTOSS_ERR_BACKEND, "all_reduce_add_rmsnorm: rank " + std::to_string(ar.rank) + " of " +
                                        std::to_string(ar.world) + " outside 1.." + std::to_string(kMaxTpRanks));
  }
  // Launched even for zero rows: the call still counts on every rank.
  all_reduce_add_rmsnorm_kernel<<<kAllReduceBlocks, kNormThreads, 0, stream>>>(
      ar, x, n_rows, dim, weight, eps, reinterpret_cast<__nv_bfloat16*>(out));
  GPTOSS_CUDA_CHECK_LAUNCH();
}

}  // namespace gptoss::cuda
