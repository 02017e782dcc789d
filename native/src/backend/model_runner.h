// ModelRunner: one backend's forward pass over a ragged batch with a paged KV
// cache. The CPU runner is the readable reference; the CUDA runner must match it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/config.h"
#include "model/tensor_parallel.h"
#include "runtime/batch.h"
#include "runtime/request.h"
#include "runtime/sampler.h"

namespace gptoss {

struct KvCacheShape {
  int32_t block_size = 16;                        // tokens per block
  int32_t num_blocks[kNumAttnKinds] = {0, 0};     // physical blocks per pool
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  virtual const ModelConfig& config() const = 0;

  // Bytes one block of `kind` takes: K and V of `block_size` tokens for every
  // layer of that kind. The engine divides its KV budget by these.
  virtual size_t kv_block_bytes(AttnKind kind, int32_t block_size) const = 0;

  // Allocates the KV pools; called once before the first forward.
  virtual void allocate_kv_cache(const KvCacheShape& shape) = 0;

  // Runs the plan: writes K/V for every planned token, and fills `logits` with
  // plan.num_logit_rows() rows of config().vocab_size floats, in chunk order.
  virtual void forward(const BatchPlan& plan, std::vector<float>& logits) = 0;

  // Bytes of weights as held by the backend.
  virtual uint64_t weight_bytes() const = 0;

  // ---- device backends (defaults: a host backend with no device memory) ----

  // Bytes of device memory for the KV cache when the backend may use
  // `memory_utilization` of the device's memory in all: that share of the
  // total, less what is in use once the weights are loaded and the runner's
  // work buffers reserved. 0 on a backend without device memory (the caller
  // then needs an explicit KV budget).
  virtual uint64_t kv_budget_bytes(float memory_utilization) const { return 0; }

  // Device memory in use and in total, for stats; zeros on the host.
  virtual void device_memory(uint64_t* used, uint64_t* total) const { *used = *total = 0; }

  // True when the backend samples itself: on the device, or over its
  // tensor-parallel ranks' vocabulary slices (runtime/sliced_sampling.h). The
  // engine then calls forward_sampled instead of forward + Sampler, so only
  // the sampled tokens (and requested log-probabilities) come back.
  virtual bool samples_on_device() const { return false; }

  // One logits row's sampling: the Sampler's inputs.
  struct RowSampling {
    const SamplingParams* params = nullptr;
    const std::unordered_map<int32_t, int32_t>* generated_counts = nullptr;  // may be null: none
    uint64_t counter = 0;  // tokens the sequence generated before this one
    // Constrained decoding: bitmask of the tokens the row may sample (bit id % 32 of word
    // id / 32); null = every token. Read only after await_masks returns.
    const uint32_t* allowed = nullptr;
  };

  // forward(plan) followed by sampling each logits row (rows[i] for row i)
  // with the Sampler's semantics (runtime/sampler.h). Only for backends whose
  // samples_on_device() is true. `await_masks` (may be empty) is called once
  // the forward pass is queued on the device and before any row's `allowed`
  // is read: the caller waits for token masks there while the device computes.
  virtual void forward_sampled(const BatchPlan& plan, const std::vector<RowSampling>& rows,
                               std::vector<SampledToken>& out, const std::function<void()>& await_masks = {});
};

// Loads `model_dir` for the CPU backend with `num_threads` threads (0 = all
// cores), sharded over `tensor_parallel` ranks in this process.
std::unique_ptr<ModelRunner> make_cpu_runner(const std::string& model_dir, int32_t num_threads,
                                             int32_t tensor_parallel = 1,
                                             MoeSharding moe = MoeSharding::Intermediate);

}  // namespace gptoss
