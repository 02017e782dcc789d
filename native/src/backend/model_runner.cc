#include "backend/model_runner.h"

#include "common/error.h"

namespace gptoss {

void ModelRunner::forward_sampled(const BatchPlan&, const std::vector<RowSampling>&, std::vector<SampledToken>&,
                                  const std::function<void()>&) {
  throw Error(GPTOSS_ERR_BACKEND,
              "forward_sampled: this backend samples on the host (samples_on_device() is false)");
}

}  // namespace gptoss
