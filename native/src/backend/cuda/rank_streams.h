// RankStreams: one stream per tensor-parallel rank, on the rank's device, and
// the fork/join that puts every rank's work into one CUDA graph (captured on
// rank 0's stream; the others join by events and are joined back).
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <vector>

namespace gptoss::cuda {

// Devices for `world` ranks: one each where the machine has that many,
// otherwise every rank on device 0 (the same code path over buffers of one
// device, so the protocol is checked on any one-GPU machine).
std::vector<int> devices_for_ranks(int world, bool share_one_device);

class RankStreams {
 public:
  explicit RankStreams(const std::vector<int>& devices);
  ~RankStreams();
  RankStreams(const RankStreams&) = delete;
  RankStreams& operator=(const RankStreams&) = delete;

  int world() const { return static_cast<int>(devices_.size()); }
  int device(int rank) const { return devices_[rank]; }
  cudaStream_t stream(int rank) const { return streams_[rank]; }

  // fn(rank) for every rank, with the rank's device current.
  void each(const std::function<void(int)>& fn) const;
  // Waits for every rank's stream.
  void synchronize() const;
  // Captures what `enqueue` puts on the ranks' streams into one graph.
  cudaGraphExec_t capture(const std::function<void()>& enqueue) const;

 private:
  std::vector<int> devices_;
  std::vector<cudaStream_t> streams_;
  std::vector<cudaEvent_t> fork_, join_;
};

}  // namespace gptoss::cuda
