#include "backend/cuda/rank_streams.h"

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/peer_all_reduce.h"

namespace gptoss::cuda {

std::vector<int> devices_for_ranks(int world, bool share_one_device) {
  int count = 0;
  GPTOSS_CUDA_CHECK(cudaGetDeviceCount(&count));
  std::vector<int> devices(world, 0);
  if (!share_one_device && count >= world) {
    for (int r = 0; r < world; ++r) devices[r] = r;
  }
  return devices;
}

RankStreams::RankStreams(const std::vector<int>& devices) : devices_(devices) {
  for (int d : devices_) {
    const DeviceScope scope(d);
    cudaStream_t s;
    cudaEvent_t fork, join;
    GPTOSS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    GPTOSS_CUDA_CHECK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    GPTOSS_CUDA_CHECK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
    streams_.push_back(s);
    fork_.push_back(fork);
    join_.push_back(join);
  }
}

RankStreams::~RankStreams() {
  for (size_t r = 0; r < devices_.size(); ++r) {
    cudaSetDevice(devices_[r]);
    cudaEventDestroy(fork_[r]);
    cudaEventDestroy(join_[r]);
    cudaStreamDestroy(streams_[r]);
  }
}

void RankStreams::each(const std::function<void(int)>& fn) const {
  for (int r = 0; r < world(); ++r) {
    const DeviceScope scope(devices_[r]);
    fn(r);
  }
}

void RankStreams::synchronize() const {
  each([&](int r) { GPTOSS_CUDA_CHECK(cudaStreamSynchronize(streams_[r])); });
}

cudaGraphExec_t RankStreams::capture(const std::function<void()>& enqueue) const {
  const DeviceScope scope(devices_[0]);
  GPTOSS_CUDA_CHECK(cudaStreamBeginCapture(streams_[0], cudaStreamCaptureModeThreadLocal));
  GPTOSS_CUDA_CHECK(cudaEventRecord(fork_[0], streams_[0]));
  each([&](int r) {
    if (r > 0) GPTOSS_CUDA_CHECK(cudaStreamWaitEvent(streams_[r], fork_[0], 0));
  });
  enqueue();
  each([&](int r) {
    if (r > 0) GPTOSS_CUDA_CHECK(cudaEventRecord(join_[r], streams_[r]));
  });
  for (int r = 1; r < world(); ++r) GPTOSS_CUDA_CHECK(cudaStreamWaitEvent(streams_[0], join_[r], 0));
  cudaGraph_t graph;
  GPTOSS_CUDA_CHECK(cudaStreamEndCapture(streams_[0], &graph));
  cudaGraphExec_t exec;
  GPTOSS_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  GPTOSS_CUDA_CHECK(cudaGraphDestroy(graph));
  return exec;
}

}  // namespace gptoss::cuda
