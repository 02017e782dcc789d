// Engine: the request API over one model runner. Owns the engine thread that
// runs the step loop (schedule -> forward -> sample -> emit events), the KV
// cache manager, the scheduler and the sampler. submit/cancel/stats are safe
// from any thread; everything else runs on the engine thread only.
//
// What differs between backends is asked of the runner, never known here or
// in the scheduler: whether it samples on the device (then only sampled
// tokens cross to the host), how much device memory the KV cache may take,
// and how much device memory is in use.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backend/model_runner.h"
#include "gptoss.h"
#include "runtime/kv_cache_manager.h"
#include "runtime/request.h"
#include "runtime/sampler.h"
#include "runtime/scheduler.h"

namespace gptoss {

struct EngineOptions {
  int32_t max_num_seqs = 16;
  int32_t max_model_len = 4096;
  int32_t max_batched_tokens = 2048;
  // KV cache budget. 0: on a device backend, what gpu_memory_utilization of
  // the device's memory leaves beside the weights and work buffers; on the
  // host, as much as max_num_seqs sequences of max_model_len can use. Either
  // way never more than that.
  uint64_t kv_cache_bytes = 0;
  float gpu_memory_utilization = 0.9f;  // (0, 1]: share of device memory for weights, work buffers and KV
  int32_t block_size = 16;
  // How long a constrained sequence may wait for a token mask before it ends
  // with GPTOSS_FINISH_MASK_TIMEOUT (see Engine::await_masks).
  int32_t token_mask_timeout_ms = 10000;
  // Keep prompts' full KV blocks after their requests end and reuse them for
  // later requests with the same prefix and cache salt (kv_cache_manager.h).
  bool enable_prefix_caching = true;
};

// Receives every event of one step, on the engine thread. Must not call back
// into the engine's destructor; submit and cancel are fine.
using EventSink = std::function<void(const gptoss_event* events, size_t n_events)>;

class Engine {
 public:
  // Validates `options` against the runner's model (Error on a bad value),
  // allocates the KV cache and starts the engine thread.
  Engine(std::unique_ptr<ModelRunner> runner, const EngineOptions& options, EventSink sink);
  // Stops the engine thread; every unfinished request gets FINISH_CANCELLED.
  ~Engine();

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues a request; returns its id. Throws Error.
  uint64_t submit(Request request);
  // True when the request was waiting or running; its blocks are freed before
  // the next step and it gets one FINISH_CANCELLED event.
  bool cancel(uint64_t id);
  // Constrained decoding: the tokens sequence `id` may sample as its
  // `position`-th generated token (see gptoss_set_token_mask). Dropped when
  // the sequence has ended; throws Error on a wrong size or an empty mask.
  void set_token_mask(uint64_t id, int32_t position, const uint32_t* bits, size_t n_words);
  gptoss_stats stats() const;
  gptoss_model_info model_info() const;

 private:
  void run();
  // One iteration of the step loop, appending the step's events.
  void step(std::vector<gptoss_event>& events);
  // Runs the plan and fills sampled_ with one token per logits row: on the
  // device when the runner samples there, else from logits_ with sampler_.
  void forward_and_sample(const StepPlan& plan);
  // Points the RowSampling of every constrained row of the plan at its token
  // mask, waiting for masks not yet there: briefly (kMaskGrace) while the wait
  // holds up other rows or new requests, else up to the sequence's timeout.
  // Sets row_outcome_: rows whose mask is still late are deferred (computed
  // again next step, the step's other rows go on); ended or timed-out ones
  // are dropped.
  void await_masks(const StepPlan& plan);
  // Takes the mask of `row` if it has come (or drops the row if its sequence
  // ended); false while it is still awaited. Called with mu_ held.
  bool take_mask(const StepPlan& plan, size_t row);
  void emit_sampled(const StepPlan& plan, std::vector<gptoss_event>& events);
  void finish(uint64_t id, gptoss_finish reason, std::vector<gptoss_event>& events);
  gptoss_finish finish_reason(const Sequence& seq, int32_t token) const;
  void publish_stats(int32_t batch_size);

  const std::unique_ptr<ModelRunner> runner_;
  const EngineOptions options_;
  const EventSink sink_;
  const uint64_t kv_budget_bytes_;  // resolved from options_ (0: sized to the demand, host only)
  const KvCacheShape kv_shape_;
  KvCacheManager kv_;
  Scheduler scheduler_;
  Sampler sampler_;
  std::vector<float> logits_;                        // host sampling only
  std::vector<ModelRunner::RowSampling> row_sampling_;  // device sampling only
  std::vector<SampledToken> sampled_;                 // this step's token per logits row
  std::vector<std::vector<uint32_t>> row_masks_;      // this step's mask per logits row (constrained rows)
  // What becomes of each logits row's token: used, or not used because its
  // mask came late (Defer: the row runs again) or its sequence is ending (Drop).
  enum class RowOutcome : char { Sample, Defer, Drop };
  std::vector<RowOutcome> row_outcome_;
  std::vector<size_t> awaited_rows_;  // await_masks: constrained rows whose mask has not come
  std::vector<uint64_t> finished_;  // ids finished this step
  uint64_t tokens_generated_ = 0;
  uint64_t mask_deferrals_ = 0;
  uint64_t prompt_tokens_processed_ = 0;
  // When publish_stats last asked the runner for device memory (a driver call, cudaMemGetInfo,
  // that a step waiting on its events should not pay every time).
  std::chrono::steady_clock::time_point device_memory_read_at_{};

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable wake_;
  bool stopping_ = false;
  uint64_t next_id_ = 1;
  std::vector<std::unique_ptr<Sequence>> arrived_;
  std::vector<uint64_t> cancel_requests_;
  std::unordered_set<uint64_t> live_;  // submitted, not finished, not cancelled
  gptoss_stats stats_{};
  // Token masks handed in by set_token_mask, by sequence id, for the position
  // it will sample next. Signalled on a new mask, a submit, a cancel and stop.
  struct PendingMask {
    int32_t position = -1;
    std::vector<uint32_t> bits;
  };
  std::unordered_map<uint64_t, PendingMask> masks_;
  std::condition_variable mask_arrived_;

  std::thread thread_;  // last: starts once everything above is built
};

}  // namespace gptoss
