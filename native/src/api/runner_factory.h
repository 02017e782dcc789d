// make_model_runner: the one place that maps a backend name to a ModelRunner.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend/model_runner.h"
#include "backend/paced/paced_runner.h"
#include "model/tensor_parallel.h"

namespace gptoss {

struct RunnerOptions {
  std::string backend;  // "cpu", "cuda", or "paced" (benches: no computation, a GPU's timing)
  std::string model_dir;
  int32_t tensor_parallel = 1;                    // ranks the weights are sharded over
  MoeSharding moe_sharding = MoeSharding::Intermediate;  // how experts shard when tensor_parallel > 1
  TpAllReduce tp_all_reduce = TpAllReduce::Peer;          // how cuda ranks sum their partials
  int32_t num_threads = 0;
  // cuda: every kernel chosen as for a prefill, whatever a step's row count,
  // so a token's bits never depend on its batch (cuda/kernels/kernels.h,
  // set_batch_invariant); the cpu backend always computes so.
  bool batch_invariant = false;
  PacedTiming pace;  // backend "paced" only
};

// Throws Error(BACKEND) for a backend not built into this library and
// Error(INVALID_ARGUMENT) for an unknown name or a bad option for it.
std::unique_ptr<ModelRunner> make_model_runner(const RunnerOptions& options);

}  // namespace gptoss
