#include "api/runner_factory.h"

#include "common/error.h"
#ifdef GPTOSS_WITH_CUDA
#include "backend/cuda/cuda_runner.h"
#include "backend/cuda/kernels/kernels.h"
#include "backend/cuda/tensor_parallel_runner.h"
#endif

namespace gptoss {

std::unique_ptr<ModelRunner> make_model_runner(const RunnerOptions& o) {
  if (o.tensor_parallel < 1) {
    throw Error(GPTOSS_ERR_INVALID_ARGUMENT,
                "tensor_parallel = " + std::to_string(o.tensor_parallel) + " must be >= 1");
  }
  if (o.backend == "cpu") {
    if (o.num_threads < 0) {
      throw Error(GPTOSS_ERR_INVALID_ARGUMENT,
                  "num_threads = " + std::to_string(o.num_threads) + " must be >= 0 (0 = all cores)");
    }
    return make_cpu_runner(o.model_dir, o.num_threads, o.tensor_parallel, o.moe_sharding);
  }
  if (o.backend == "cuda") {
#ifdef GPTOSS_WITH_CUDA
    if (o.batch_invariant) cuda::set_batch_invariant(true);  // else GPTOSS_BATCH_INVARIANT's choice
    if (o.tensor_parallel > 1)
      return make_cuda_tensor_parallel_runner(o.model_dir, o.tensor_parallel, o.moe_sharding, o.tp_all_reduce);
    return make_cuda_runner(o.model_dir);
#else
    throw Error(GPTOSS_ERR_BACKEND,
                "backend \"cuda\" is not built into this engine (no CUDA compiler at build time); use \"cpu\"");
#endif
  }
  if (o.backend == "paced") return make_paced_runner(o.model_dir, o.pace);
  throw Error(GPTOSS_ERR_INVALID_ARGUMENT,
              "backend \"" + o.backend + "\" is unknown; use \"cpu\" or \"cuda\" (or \"paced\" for benches)");
}

}  // namespace gptoss
