#include "backend/cuda/peer_all_reduce.h"

#include <string>

namespace gptoss::cuda {

DeviceScope::DeviceScope(int device) {
  GPTOSS_CUDA_CHECK(cudaGetDevice(&previous_));
  GPTOSS_CUDA_CHECK(cudaSetDevice(device));
}

DeviceScope::~DeviceScope() { cudaSetDevice(previous_); }

namespace {

void enable_peer_access(int from, int to) {
  int can = 0;
  GPTOSS_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, from, to));
  if (!can) {
    throw Error(GPTOSS_ERR_BACKEND, "tensor parallel: GPU " + std::to_string(from) + " cannot access GPU " +
                                        std::to_string(to) + " (no peer-to-peer path)");
  }
  const DeviceScope scope(from);
  const cudaError_t status = cudaDeviceEnablePeerAccess(to, 0);
  if (status == cudaErrorPeerAccessAlreadyEnabled) {
    cudaGetLastError();  // clears the sticky status of this benign repeat
  } else {
    GPTOSS_CUDA_CHECK(status);
  }
}

}  // namespace

PeerAllReduce::PeerAllReduce(const std::vector<int>& devices, int32_t num_sites, int64_t max_elements)
    : devices_(devices), max_elements_(max_elements) {
  if (devices.empty() || devices.size() > static_cast<size_t>(kMaxTpRanks) || num_sites < 2) {
    throw Error(GPTOSS_ERR_BACKEND, "PeerAllReduce: 1.." + std::to_string(kMaxTpRanks) +
                                        " ranks and at least 2 call sites");
  }
  for (size_t a = 0; a < devices.size(); ++a) {
    for (size_t b = 0; b < devices.size(); ++b) {
      if (devices[a] != devices[b]) enable_peer_access(devices[a], devices[b]);
    }
  }
  partials_.resize(num_sites);
  for (int32_t r = 0; r < world(); ++r) {
    const DeviceScope scope(devices[r]);
    flags_.emplace_back(static_cast<size_t>(kMaxTpRanks) * kAllReduceBlocks);
    counters_.emplace_back(kAllReduceBlocks);
    GPTOSS_CUDA_CHECK(cudaMemset(flags_.back().get(), 0, flags_.back().bytes()));
    GPTOSS_CUDA_CHECK(cudaMemset(counters_.back().get(), 0, counters_.back().bytes()));
    for (auto& site : partials_) site.emplace_back(max_elements);
  }
  for (int32_t r = 0; r < world(); ++r) {
    const DeviceScope scope(devices[r]);
    GPTOSS_CUDA_CHECK(cudaDeviceSynchronize());  // the zeroed flags are in place before any launch
  }
}

void PeerAllReduce::run(int32_t site, int32_t rank, float* x, int32_t n_rows, int32_t dim, const bf16* weight,
                        float eps, bf16* out, cudaStream_t stream) const {
  if (static_cast<int64_t>(n_rows) * dim > max_elements_) {
    throw Error(GPTOSS_ERR_BACKEND, "PeerAllReduce: " + std::to_string(n_rows) + " rows of " + std::to_string(dim) +
                                        " exceed the buffers of " + std::to_string(max_elements_) + " floats");
  }
  AllReduceRank ar;
  ar.rank = rank;
  ar.world = world();
  for (int32_t q = 0; q < world(); ++q) {
    ar.partials[q] = partials_[site][q].get();
    ar.flags[q] = flags_[q].get();
  }
  ar.counters = counters_[rank].get();
  all_reduce_add_rmsnorm(ar, x, n_rows, dim, weight, eps, out, stream);
}

}  // namespace gptoss::cuda
