// The process-wide switch behind set_batch_invariant (kernels.h), read by
// every launcher that picks a kernel by the step's row count. Its first value
// is GPTOSS_BATCH_INVARIANT (1: on), so that the check and bench tools, which
// build their runners without engine options, can be run in the mode.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/kernels/kernels.h"

namespace gptoss::cuda {
namespace {
std::atomic<bool>& batch_invariant_slot() {
  static std::atomic<bool> slot{[] {
    const char* value = std::getenv("GPTOSS_BATCH_INVARIANT");
    return value != nullptr && std::strcmp(value, "1") == 0;
  }()};
  return slot;
}
}  // namespace

void set_batch_invariant(bool on) { batch_invariant_slot().store(on); }

bool batch_invariant() { return batch_invariant_slot().load(std::memory_order_relaxed); }

}  // namespace gptoss::cuda
