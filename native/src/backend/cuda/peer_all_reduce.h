// PeerAllReduce: the memory a group of tensor-parallel ranks shares for
// all_reduce_add_rmsnorm (kernels/all_reduce.h), and its launches.
//
// Each rank's flags, call counters and partial buffers live on its own
// device; peers reach them through peer access, enabled both ways at
// construction. Ranks may share a device (the two-rank check on one GPU): the
// same kernel and protocol then run over two buffers of one device.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "backend/cuda/device_buffer.h"
#include "backend/cuda/kernels/all_reduce.h"

namespace gptoss::cuda {

// Makes `device` current for its lifetime, then restores the previous one.
class DeviceScope {
 public:
  explicit DeviceScope(int device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

class PeerAllReduce {
 public:
  // devices[r] is rank r's device. `num_sites` call sites (attention output,
  // MoE output) each get a partial buffer of `max_elements` floats per rank;
  // consecutive calls must use different sites. Throws Error(BACKEND) when
  // two devices cannot reach each other.
  PeerAllReduce(const std::vector<int>& devices, int32_t num_sites, int64_t max_elements);

  int32_t world() const { return static_cast<int32_t>(devices_.size()); }
  int device(int32_t rank) const { return devices_[rank]; }
  // Where rank `rank` writes its partial for a call at `site`.
  float* partial(int32_t site, int32_t rank) const { return partials_[site][rank].get(); }

  // Rank `rank`'s part of a call at `site` (kernels/all_reduce.h), on
  // `stream` of the rank's device; the caller has made that device current.
  void run(int32_t site, int32_t rank, float* x, int32_t n_rows, int32_t dim, const bf16* weight, float eps,
           bf16* out, cudaStream_t stream) const;

 private:
  std::vector<int> devices_;
  int64_t max_elements_;
  std::vector<DeviceBuffer<uint32_t>> flags_;     // per rank: [kMaxTpRanks][kAllReduceBlocks]
  std::vector<DeviceBuffer<uint32_t>> counters_;  // per rank: [kAllReduceBlocks]
  std::vector<std::vector<DeviceBuffer<float>>> partials_;  // [site][rank]
};

}  // namespace gptoss::cuda
