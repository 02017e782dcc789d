// A/B kernel variants (kernels.h): each family's choice comes from its
// environment variable, read once on first use, like GPTOSS_MOE_KERNEL; the
// check and bench tools switch between them.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/kernels.h"

namespace gptoss::cuda {
namespace {

struct Family {
  const char* env;
  std::vector<std::string> names;  // the first is the default
};

constexpr int kFamilies = 4;

const Family& family(KernelFamily f) {
  static const Family families[kFamilies] = {{"GPTOSS_MOE_GEMV", {"base", "mma4", "mma6", "mma12"}},
                                             {"GPTOSS_DENSE_GEMV", {"base", "ring"}},
                                             {"GPTOSS_L2_PREFETCH", {"off", "o"}},
                                             {"GPTOSS_STREAMED", {"base", "balance", "sectors", "splitk", "t32", "all"}}};
  return families[static_cast<int>(f)];
}

size_t index_of(const Family& fam, const std::string& name) {
  const auto it = std::find(fam.names.begin(), fam.names.end(), name);
  if (it == fam.names.end()) {
    std::string known;
    for (const std::string& n : fam.names) known += (known.empty() ? "" : ", ") + n;
    throw Error(GPTOSS_ERR_BACKEND, std::string(fam.env) + " must be one of " + known + ", not '" + name + "'");
  }
  return static_cast<size_t>(it - fam.names.begin());
}

size_t from_environment(KernelFamily f) {
  const char* value = std::getenv(family(f).env);
  return value == nullptr ? 0 : index_of(family(f), value);
}

// Read from the environment on first use (a thread-safe static), atomic after:
// tensor-parallel ranks launch from their own threads.
std::atomic<size_t>& chosen(KernelFamily f) {
  static std::atomic<size_t> indices[kFamilies] = {{from_environment(KernelFamily::MoeGemv)},
                                                   {from_environment(KernelFamily::DenseGemv)},
                                                   {from_environment(KernelFamily::L2Prefetch)},
                                                   {from_environment(KernelFamily::Streamed)}};
  return indices[static_cast<int>(f)];
}

}  // namespace

const std::vector<std::string>& kernel_variants(KernelFamily f) { return family(f).names; }

size_t kernel_variant_index(KernelFamily f) { return chosen(f).load(); }

const std::string& kernel_variant(KernelFamily f) { return family(f).names[chosen(f).load()]; }

void set_kernel_variant(KernelFamily f, const std::string& name) { chosen(f).store(index_of(family(f), name)); }

}  // namespace gptoss::cuda
