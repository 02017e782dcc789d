// Test support for the runtime tests: a tiny test registry with CHECK macros
// (no test framework is available offline) and TraceRunner, a deterministic
// ModelRunner that really goes through the paged KV cache.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <string>
#include <vector>

#include "backend/model_runner.h"
#include "common/error.h"
#include "gptoss.h"
#include "runtime/counter_rng.h"
#include "runtime/engine.h"
#include "runtime/request.h"
#include "runtime/sampler.h"

namespace gptoss::testing {

struct TestCase {
  const char* name;
  void (*fn)();
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

inline int& failures() {
  static int n = 0;
  return n;
}

struct Registrar {
  Registrar(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

inline void fail_check(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "  FAILED %s:%d: %s\n", file, line, what.c_str());
  ++failures();
}

inline int run_all_tests() {
  for (const TestCase& t : registry()) {
    const int before = failures();
    try {
      t.fn();
    } catch (const std::exception& e) {
      fail_check(t.name, 0, std::string("uncaught exception: ") + e.what());
    }
    std::fprintf(stderr, "%s %s\n", failures() == before ? "ok  " : "FAIL", t.name);
  }
  std::fprintf(stderr, "%zu tests, %d failed checks\n", registry().size(), failures());
  return failures() == 0 ? 0 : 1;
}

}  // namespace gptoss::testing

#define TEST(name)                                                                  \
  static void name();                                                               \
  static const ::gptoss::testing::Registrar name##_registrar(#name, name);         \
  static void name()

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) ::gptoss::testing::fail_check(__FILE__, __LINE__, #cond);          \
  } while (0)

#define CHECK_EQ(a, b)                                                              \
  do {                                                                              \
    const auto& check_a_ = (a);                                                     \
    const auto& check_b_ = (b);                                                     \
    if (!(check_a_ == check_b_)) {                                                  \
      std::ostringstream check_msg_;                                                \
      check_msg_ << #a " == " #b " (" << check_a_ << " vs " << check_b_ << ")";     \
      ::gptoss::testing::fail_check(__FILE__, __LINE__, check_msg_.str());          \
    }                                                                               \
  } while (0)

#define CHECK_THROWS_STATUS(expr, expected_status)                                           \
  do {                                                                              \
    try {                                                                           \
      expr;                                                                         \
      ::gptoss::testing::fail_check(__FILE__, __LINE__, #expr " did not throw");    \
    } catch (const ::gptoss::Error& check_e_) {                                     \
      if (check_e_.status() != (expected_status)) {                                          \
        ::gptoss::testing::fail_check(__FILE__, __LINE__,                           \
                                      std::string(#expr " threw ") + check_e_.what()); \
      }                                                                             \
    }                                                                               \
  } while (0)

#define TEST_MAIN() \
  int main() { return ::gptoss::testing::run_all_tests(); }

namespace gptoss::testing {

// TraceRunner: a stand-in model whose "K/V" is the (token, position) pair of
// each position, stored in paged pools exactly where the block tables say.
// The logits of a position are a hash of everything attention may read: all
// earlier entries of the full pool, and the last `sliding_window` + 1 entries
// of the sliding pool. So a wrong block table, a block released too early or
// one shared by two sequences changes the output or throws, and the expected
// output of any prompt can be computed without a cache (reference_logits).
class TraceRunner : public ModelRunner {
 public:
  static constexpr int32_t kVocab = 64;
  static constexpr int32_t kWindow = 8;

  TraceRunner() {
    config_.num_layers = 2;
    config_.hidden_size = 8;
    config_.vocab_size = kVocab;
    config_.sliding_window = kWindow;
    config_.max_position_embeddings = 4096;
    config_.layer_kinds = {AttnKind::Sliding, AttnKind::Full};
  }

  const ModelConfig& config() const override { return config_; }
  size_t kv_block_bytes(AttnKind, int32_t block_size) const override { return 64u * block_size; }
  uint64_t weight_bytes() const override { return 1024; }

  void allocate_kv_cache(const KvCacheShape& shape) override {
    block_size_ = shape.block_size;
    for (int k = 0; k < kNumAttnKinds; ++k) {
      pools_[k].assign(static_cast<size_t>(shape.num_blocks[k]) * block_size_, Slot{});
    }
  }

  void forward(const BatchPlan& plan, std::vector<float>& logits) override {
    ++forward_calls;
    if (before_forward) before_forward(plan);
    logits.assign(static_cast<size_t>(plan.num_logit_rows()) * kVocab, 0.0f);
    size_t row = 0;
    for (const ChunkPlan& c : plan.chunks) {
      for (int32_t i = 0; i < c.n_tokens; ++i) {
        const int32_t pos = c.start_pos + i;
        for (int k = 0; k < kNumAttnKinds; ++k) slot(c, k, pos) = Slot{plan.tokens[c.token_offset + i], pos};
      }
      if (!c.want_logits) continue;
      const int32_t last = c.start_pos + c.n_tokens - 1;
      std::vector<int32_t> context;
      for (int32_t pos = 0; pos <= last; ++pos) context.push_back(read(c, 0, pos));
      std::vector<int32_t> window;
      for (int32_t pos = std::max(0, last - kWindow); pos <= last; ++pos) window.push_back(read(c, 1, pos));
      fill_logits(context, window, logits.data() + row++ * kVocab);
    }
  }

  // The logits after `tokens` (the whole sequence so far), computed directly.
  static std::vector<float> reference_logits(const std::vector<int32_t>& tokens) {
    std::vector<int32_t> window(tokens.end() - std::min<size_t>(tokens.size(), kWindow + 1), tokens.end());
    std::vector<float> out(kVocab);
    fill_logits(tokens, window, out.data());
    return out;
  }

  int forward_calls = 0;
  // Called on the engine thread before each forward; may throw to simulate a device failure.
  std::function<void(const BatchPlan&)> before_forward;

 private:
  struct Slot {
    int32_t token = -1;
    int32_t pos = -1;
  };

  Slot& slot(const ChunkPlan& c, int kind, int32_t pos) {
    const int32_t logical = pos / block_size_;
    if (logical >= c.n_blocks[kind]) throw std::runtime_error("position beyond the block table");
    const int32_t block = c.block_table[kind][logical];
    if (block < 0) throw std::runtime_error("read of a released sliding block");
    return pools_[kind].at(static_cast<size_t>(block) * block_size_ + pos % block_size_);
  }

  int32_t read(const ChunkPlan& c, int kind, int32_t pos) {
    const Slot& s = slot(c, kind, pos);
    if (s.pos != pos) throw std::runtime_error("KV slot holds another position: block shared or overwritten");
    return s.token;
  }

  static uint64_t hash(const std::vector<int32_t>& tokens) {
    uint64_t h = 0x12345;
    for (int32_t t : tokens) h = mix64(h ^ static_cast<uint64_t>(t + 1));
    return h;
  }

  static void fill_logits(const std::vector<int32_t>& context, const std::vector<int32_t>& window, float* out) {
    const uint64_t h = mix64(hash(context) ^ (hash(window) << 1));
    for (int32_t v = 0; v < kVocab; ++v) out[v] = static_cast<float>(uniform01(h, v) * 8.0 - 4.0);
  }

  ModelConfig config_;
  int32_t block_size_ = 16;
  std::vector<Slot> pools_[kNumAttnKinds];
};

}  // namespace gptoss::testing

namespace gptoss::testing {

// Collects engine events per request id from the engine thread.
class EventCollector {
 public:
  void on_events(const gptoss_event* events, size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    ++batches_;
    for (size_t i = 0; i < n; ++i) by_id_[events[i].request_id].push_back(events[i]);
    changed_.notify_all();
  }

  static void c_callback(void* self, const gptoss_event* events, size_t n) {
    static_cast<EventCollector*>(self)->on_events(events, n);
  }

  // This request's events once its finish event arrived (empty after 30 s).
  std::vector<gptoss_event> wait_finished(uint64_t id) {
    std::unique_lock<std::mutex> lock(mu_);
    const bool done = changed_.wait_for(lock, std::chrono::seconds(30), [&] {
      auto it = by_id_.find(id);
      return it != by_id_.end() && it->second.back().finish != GPTOSS_FINISH_NONE;
    });
    if (!done) fail_check(__FILE__, __LINE__, "request " + std::to_string(id) + " did not finish in 30 s");
    return done ? by_id_[id] : std::vector<gptoss_event>{};
  }

  std::vector<gptoss_event> events_of(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    return by_id_[id];
  }

  size_t batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<uint64_t, std::vector<gptoss_event>> by_id_;
  size_t batches_ = 0;
};

// An Engine over a TraceRunner (or a subclass), its events collected.
struct Harness {
  explicit Harness(const EngineOptions& options, std::unique_ptr<TraceRunner> owned = std::make_unique<TraceRunner>()) {
    runner = owned.get();
    engine = std::make_unique<Engine>(std::move(owned), options,
                                      [this](const gptoss_event* e, size_t n) { events.on_events(e, n); });
  }
  TraceRunner* runner;
  EventCollector events;
  std::unique_ptr<Engine> engine;  // last: stopped before the collector goes
};

// What a request must generate over TraceRunner: the same sampler over logits
// computed from the whole token sequence directly, with no cache and no batching.
inline std::vector<int32_t> reference_output(const Request& r) {
  Sampler sampler(TraceRunner::kVocab);
  std::vector<int32_t> tokens = r.prompt;
  std::unordered_map<int32_t, int32_t> counts;
  std::vector<int32_t> out;
  for (int32_t i = 0; i < r.sampling.max_tokens; ++i) {
    const std::vector<float> logits = TraceRunner::reference_logits(tokens);
    const int32_t t = sampler.sample(logits.data(), r.sampling, counts, i).token;
    out.push_back(t);
    tokens.push_back(t);
    ++counts[t];
  }
  return out;
}

// Submits every request at once, then checks each output against the reference.
inline void check_outputs_together(Harness& h, const std::vector<Request>& reqs);

// The generated tokens of a finished request's events (finish-only events carry -1).
inline std::vector<int32_t> tokens_of(const std::vector<gptoss_event>& events) {
  std::vector<int32_t> out;
  for (const gptoss_event& e : events) {
    if (e.token >= 0) out.push_back(e.token);
  }
  return out;
}

}  // namespace gptoss::testing

namespace gptoss::testing {

inline void check_outputs_together(Harness& h, const std::vector<Request>& reqs) {
  std::vector<uint64_t> ids;
  for (const Request& r : reqs) ids.push_back(h.engine->submit(r));
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (tokens_of(h.events.wait_finished(ids[i])) != reference_output(reqs[i])) {
      fail_check(__FILE__, __LINE__, "request " + std::to_string(i) + " differs from its reference output");
    }
  }
}

// Constrained decoding over TraceRunner: the tokens position `p` may take.
inline std::vector<int32_t> allowed_at(int32_t p) { return {(5 + 3 * p) % TraceRunner::kVocab, (40 + 7 * p) % TraceRunner::kVocab}; }

inline std::vector<uint32_t> mask_allowing(const std::vector<int32_t>& ids) {
  std::vector<uint32_t> mask((TraceRunner::kVocab + 31) / 32, 0u);
  for (int32_t id : ids) mask[id >> 5] |= 1u << (id & 31);
  return mask;
}

// What a greedy request constrained by allowed_at must generate: the argmax among the allowed
// tokens of the logits after the whole sequence, computed directly.
inline std::vector<int32_t> constrained_reference(std::vector<int32_t> tokens, int32_t n) {
  std::vector<int32_t> out;
  for (int32_t p = 0; p < n; ++p) {
    const std::vector<float> logits = TraceRunner::reference_logits(tokens);
    int32_t best = -1;
    for (int32_t id : allowed_at(p)) if (best < 0 || logits[id] > logits[best]) best = id;
    out.push_back(best);
    tokens.push_back(best);
  }
  return out;
}

// Hands over the masks of positions 0 .. n-1, each once the token before it is out, as the worker does.
inline void feed_masks(Harness& h, uint64_t id, int32_t n) {
  for (int32_t p = 0; p < n; ++p) {
    for (int i = 0; i < 5000 && tokens_of(h.events.events_of(id)).size() < size_t(p); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const std::vector<uint32_t> mask = mask_allowing(allowed_at(p));
    h.engine->set_token_mask(id, p, mask.data(), mask.size());
  }
}

}  // namespace gptoss::testing
