#include "backend/paced/paced_runner.h"

#include <chrono>
#include <thread>

#include "common/error.h"
#include "model/config.h"

namespace gptoss {
namespace {

// Byte-level tokens 64..89 of o200k are the letters a..z: text every output parser shows at once.
constexpr int32_t kFirstLetterToken = 64;
constexpr int32_t kLetters = 26;

class PacedRunner final : public ModelRunner {
 public:
  PacedRunner(ModelConfig config, const PacedTiming& timing) : config_(std::move(config)), timing_(timing) {
    if (timing.step_us < 0 || timing.prefill_us_per_token < 0) {
      throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "paced runner: step and prefill times must be >= 0");
    }
  }

  const ModelConfig& config() const override { return config_; }

  // What the CUDA runner's bf16 K and V of one block take: the KV budget plans as it would there.
  size_t kv_block_bytes(AttnKind kind, int32_t block_size) const override {
    return static_cast<size_t>(config_.num_layers_of(kind)) * 2 * block_size * config_.num_kv_heads *
           config_.head_dim * 2;
  }

  void allocate_kv_cache(const KvCacheShape&) override {}

  void forward(const BatchPlan&, std::vector<float>&) override {
    throw Error(GPTOSS_ERR_BACKEND, "the paced runner samples on its own device: call forward_sampled");
  }

  uint64_t weight_bytes() const override { return 0; }

  bool samples_on_device() const override { return true; }

  void forward_sampled(const BatchPlan& plan, const std::vector<RowSampling>& rows, std::vector<SampledToken>& out,
                       const std::function<void()>& await_masks) override {
    const auto step_end = std::chrono::steady_clock::now() + step_time(plan);
    if (await_masks) await_masks();  // while the "device" computes, as on a GPU
    out.assign(rows.size(), SampledToken{});
    for (size_t r = 0; r < rows.size(); ++r) out[r].token = token_for(rows[r]);
    std::this_thread::sleep_until(step_end);
  }

 private:
  std::chrono::microseconds step_time(const BatchPlan& plan) const {
    int64_t prompt_tokens = 0;
    for (const ChunkPlan& chunk : plan.chunks) prompt_tokens += chunk.n_tokens - 1;
    return std::chrono::microseconds(timing_.step_us + prompt_tokens * timing_.prefill_us_per_token);
  }

  // A letter by the row's counter (its generated tokens so far); a constrained row takes the
  // first token its mask allows from there on.
  int32_t token_for(const RowSampling& row) const {
    const int32_t letter = kFirstLetterToken + static_cast<int32_t>(row.counter % kLetters);
    if (row.allowed == nullptr) return letter;
    const auto allowed = [&](int32_t id) { return (row.allowed[id / 32] >> (id % 32)) & 1u; };
    for (int32_t i = 0; i < config_.vocab_size; ++i) {
      const int32_t id = (letter + i) % config_.vocab_size;
      if (allowed(id)) return id;
    }
    return letter;  // the engine refuses empty masks: not reached
  }

  const ModelConfig config_;
  const PacedTiming timing_;
};

}  // namespace

std::unique_ptr<ModelRunner> make_paced_runner(const std::string& model_dir, const PacedTiming& timing) {
  return std::make_unique<PacedRunner>(load_model_config(model_dir), timing);
}

}  // namespace gptoss
