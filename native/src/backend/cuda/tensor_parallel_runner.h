// TensorParallelCudaRunner: the gpt-oss forward pass over N tensor-parallel
// ranks in one process (docs/cuda-notes.md, "Tensor parallel").
//
// Each rank is a CudaRunner of its shard (model/tensor_parallel.h) on its
// device and its stream of RankStreams: one device per rank where the machine
// has them (peer access both ways), else every rank on device 0 - the same
// code path, so one GPU checks it. The ranks' attention and MoE outputs meet
// in PeerAllReduce, fused with the residual add and the next RMSNorm. Steps
// are enqueued part by part across the ranks (every rank's work up to an
// all-reduce, then every rank's all-reduce), so the host never launches other
// work while an all-reduce waits for a peer not yet launched; decode steps are
// one CUDA graph over all ranks. Each rank computes its vocabulary rows of
// the logits; they are gathered on rank 0 for the one-device sampler
// (sampling on the distributed logits is not built yet).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend/model_runner.h"
#include "model/tensor_parallel.h"

namespace gptoss {

// Loads `model_dir` sharded over `tensor_parallel` ranks (>= 2), the MoE in
// `moe`'s layout (experts split whole: a rank computes only the pairs routed
// to its experts, MoeGroups::held).
// `all_reduce` TpAllReduce::Nccl needs NCCL built in (GPTOSS_WITH_NCCL) and
// a device per rank, else Error(INVALID_ARGUMENT) before loading anything.
std::unique_ptr<ModelRunner> make_cuda_tensor_parallel_runner(const std::string& model_dir,
                                                              int32_t tensor_parallel, MoeSharding moe,
                                                              TpAllReduce all_reduce = TpAllReduce::Peer);

}  // namespace gptoss
