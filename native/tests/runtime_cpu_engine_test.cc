// The engine through the C API on the real CPU runner and a generated tiny
// model: batch invariance, preemption under a small KV cache, cancellation,
// every validation error, backend selection, prefix caching changing no bit,
// tensor parallelism. ctest runs it twice: as is, and with
// GPTOSS_TEST_TENSOR_PARALLEL=2 (every scenario on the model sharded over two
// ranks).
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "gptoss.h"
#include "model_test_support.h"
#include "runtime_test_support.h"

using namespace gptoss::testing;

namespace {

// The tiny model, generated once into a scratch directory by the
// gptoss-gen-model built beside this test.
const std::string& tiny_model_dir() {
  static const gptoss::test::ScratchDir scratch("runtime-test");
  static const std::string dir = [] {
    gptoss::test::generate_model("--preset tiny", scratch / "tiny");
    return scratch / "tiny";
  }();
  return dir;
}

int32_t tensor_parallel_under_test() {
  const char* value = std::getenv("GPTOSS_TEST_TENSOR_PARALLEL");
  return value ? std::atoi(value) : 1;
}

gptoss_engine_config base_config() {
  gptoss_engine_config cfg{};
  cfg.model_dir = tiny_model_dir().c_str();
  cfg.backend = "cpu";
  cfg.tensor_parallel = tensor_parallel_under_test();
  cfg.max_num_seqs = 16;
  cfg.max_model_len = 512;
  cfg.max_batched_tokens = 512;
  cfg.num_threads = 2;
  return cfg;
}

gptoss_sampling greedy(int32_t max_tokens) {
  gptoss_sampling s{};
  s.top_p = 1.0f;
  s.max_tokens = max_tokens;
  s.top_logprobs = -1;
  return s;
}

struct EngineHandle {
  explicit EngineHandle(const gptoss_engine_config& cfg) {
    char err[512];
    const int status = gptoss_engine_create(&cfg, &EventCollector::c_callback, &events, &engine, err, sizeof err);
    if (status != GPTOSS_OK) throw std::runtime_error(std::string("engine create failed: ") + err);
  }
  ~EngineHandle() { gptoss_engine_destroy(engine); }

  uint64_t submit(const std::vector<int32_t>& prompt, const gptoss_sampling& sampling, const char* key = nullptr) {
    gptoss_request req{};
    req.prompt = prompt.data();
    req.n_prompt = static_cast<int32_t>(prompt.size());
    req.sampling = sampling;
    req.fairness_key = key;
    req.cache_salt = key;
    uint64_t id = 0;
    char err[512];
    if (gptoss_submit(engine, &req, &id, err, sizeof err) != GPTOSS_OK) {
      throw std::runtime_error(std::string("submit failed: ") + err);
    }
    return id;
  }

  int try_submit(const std::vector<int32_t>& prompt, const gptoss_sampling& sampling, std::string* message) {
    gptoss_request req{};
    req.prompt = prompt.empty() ? nullptr : prompt.data();
    req.n_prompt = static_cast<int32_t>(prompt.size());
    req.sampling = sampling;
    uint64_t id = 0;
    char err[512];
    const int status = gptoss_submit(engine, &req, &id, err, sizeof err);
    if (message) *message = err;
    return status;
  }

  gptoss_stats stats() {
    gptoss_stats s;
    gptoss_get_stats(engine, &s);
    return s;
  }

  EventCollector events;
  gptoss_engine* engine = nullptr;
};

std::vector<int32_t> prompt_of_length(int32_t n, int32_t salt) {
  std::vector<int32_t> p;
  for (int32_t i = 0; i < n; ++i) p.push_back((i * 7919 + salt * 104729 + 17) % 201088);
  return p;
}

std::vector<std::vector<int32_t>> mixed_prompts() {
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 16; ++i) prompts.push_back(prompt_of_length(1 + (i * 37) % 90, i));
  return prompts;
}

std::vector<int32_t> alone(const std::vector<int32_t>& prompt, const gptoss_sampling& s) {
  EngineHandle h(base_config());
  return tokens_of(h.events.wait_finished(h.submit(prompt, s)));
}

template <typename Pred>
bool wait_until(Pred pred) {
  for (int i = 0; i < 3000 && !pred(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return pred();
}

}  // namespace

TEST(greedy_output_alone_equals_output_in_a_chunked_batch) {
  const std::vector<std::vector<int32_t>> prompts = mixed_prompts();
  gptoss_engine_config cfg = base_config();
  cfg.max_batched_tokens = 24;  // long prompts are prefilled in several chunks beside decodes
  EngineHandle batched(cfg);
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < prompts.size(); ++i) ids.push_back(batched.submit(prompts[i], greedy(4 + i % 5)));
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int32_t> in_batch = tokens_of(batched.events.wait_finished(ids[i]));
    CHECK_EQ(in_batch.size(), 4 + i % 5);
    CHECK(in_batch == alone(prompts[i], greedy(4 + i % 5)));
  }
  const gptoss_stats s = batched.stats();
  CHECK(s.last_batch_size >= 1);
  CHECK_EQ(s.kv_blocks_used, 0);
}

TEST(seeded_sampled_output_alone_equals_output_in_a_batch) {
  const std::vector<std::vector<int32_t>> prompts = mixed_prompts();
  gptoss_sampling s = greedy(6);
  s.temperature = 1.0f;
  s.top_k = 50;
  s.has_seed = 1;
  gptoss_engine_config cfg = base_config();
  cfg.max_batched_tokens = 40;
  EngineHandle batched(cfg);
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < 6; ++i) {
    s.seed = 77 + i;
    ids.push_back(batched.submit(prompts[i], s));
  }
  for (size_t i = 0; i < 6; ++i) {
    s.seed = 77 + i;
    CHECK(tokens_of(batched.events.wait_finished(ids[i])) == alone(prompts[i], s));
  }
}

TEST(small_kv_cache_queues_and_preempts_but_every_output_is_right) {
  const std::vector<std::vector<int32_t>> prompts = mixed_prompts();
  gptoss_engine_config cfg = base_config();
  cfg.block_size = 16;
  cfg.max_batched_tokens = 64;
  cfg.kv_cache_bytes = 160 * 1024;  // a few dozen blocks for 16 sequences of up to ~100 tokens
  EngineHandle h(cfg);
  CHECK(h.stats().kv_blocks_total < 64);
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < prompts.size(); ++i) ids.push_back(h.submit(prompts[i], greedy(12)));
  for (size_t i = 0; i < prompts.size(); ++i) {
    CHECK(tokens_of(h.events.wait_finished(ids[i])) == alone(prompts[i], greedy(12)));
  }
  CHECK_EQ(h.stats().kv_blocks_used, 0);
  // A request longer than the whole cache is refused up front.
  std::string message;
  CHECK_EQ(h.try_submit(prompt_of_length(400, 1), greedy(100), &message), GPTOSS_ERR_CAPACITY);
  CHECK(message.find("KV blocks") != std::string::npos);
}

TEST(cancel_mid_prefill_frees_blocks_and_emits_one_cancelled_event) {
  gptoss_engine_config cfg = base_config();
  cfg.max_num_seqs = 4;
  cfg.max_batched_tokens = 4;  // 480 prompt tokens take 120 steps
  EngineHandle h(cfg);
  const uint64_t id = h.submit(prompt_of_length(480, 3), greedy(5));
  CHECK(wait_until([&] { return h.stats().prompt_tokens_processed >= 16; }));
  CHECK(h.stats().kv_blocks_used > 0);
  CHECK_EQ(gptoss_cancel(h.engine, id), GPTOSS_OK);
  const std::vector<gptoss_event> ev = h.events.wait_finished(id);
  CHECK_EQ(ev.size(), 1u);
  CHECK_EQ(ev[0].finish, GPTOSS_FINISH_CANCELLED);
  CHECK_EQ(ev[0].token, -1);
  const gptoss_stats s = h.stats();
  CHECK(s.prompt_tokens_processed < 480);
  CHECK_EQ(s.running, 0);
  CHECK_EQ(s.kv_blocks_used, 0);
  CHECK(gptoss_cancel(h.engine, id) != GPTOSS_OK);
}

TEST(cancel_mid_decode_stops_the_stream) {
  EngineHandle h(base_config());
  const uint64_t id = h.submit(prompt_of_length(10, 4), greedy(400));
  const uint64_t other = h.submit(prompt_of_length(12, 5), greedy(8));
  CHECK(wait_until([&] { return h.events.events_of(id).size() >= 3; }));
  CHECK_EQ(gptoss_cancel(h.engine, id), GPTOSS_OK);
  const std::vector<gptoss_event> ev = h.events.wait_finished(id);
  CHECK_EQ(ev.back().finish, GPTOSS_FINISH_CANCELLED);
  CHECK(tokens_of(ev).size() >= 3);
  CHECK(tokens_of(ev).size() < 400);
  CHECK_EQ(tokens_of(h.events.wait_finished(other)).size(), 8u);
  CHECK(wait_until([&] { return h.stats().running == 0; }));
  CHECK_EQ(h.stats().kv_blocks_used, 0);
}

TEST(every_invalid_request_gets_its_status_and_a_message) {
  EngineHandle h(base_config());
  const std::vector<int32_t> ok = {1, 2, 3};
  auto status_of = [&](const std::vector<int32_t>& prompt, gptoss_sampling s, const char* expect_in_message) {
    std::string message;
    const int status = h.try_submit(prompt, s, &message);
    if (message.find(expect_in_message) == std::string::npos) {
      fail_check(__FILE__, __LINE__, "message '" + message + "' lacks '" + expect_in_message + "'");
    }
    return status;
  };
  auto with = [](auto mutate) {
    gptoss_sampling s = greedy(4);
    mutate(s);
    return s;
  };
  const int bad = GPTOSS_ERR_INVALID_ARGUMENT;
  CHECK_EQ(status_of({}, greedy(4), "empty"), bad);
  CHECK_EQ(status_of({1, 201088}, greedy(4), "prompt[1]"), bad);
  CHECK_EQ(status_of({-5}, greedy(4), "prompt[0]"), bad);
  CHECK_EQ(status_of(prompt_of_length(512, 0), greedy(4), "max_model_len"), GPTOSS_ERR_CONTEXT_LENGTH);
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.temperature = -1; }), "temperature"), bad);
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.temperature = INFINITY; }), "temperature"), bad);
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.top_p = 0; }), "top_p"), bad);
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.top_p = 1.01f; }), "top_p"), bad);
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.top_k = -3; }), "top_k"), bad);
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.min_p = -0.1f; }), "min_p"), bad);
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.presence_penalty = 2.1f; }), "presence_penalty"), bad);
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.frequency_penalty = NAN; }), "frequency_penalty"), bad);
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.max_tokens = 0; }), "max_tokens"), bad);
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.top_logprobs = 21; }), "top_logprobs"), bad);
  static const int32_t bad_stop[] = {300000};
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.stop_token_ids = bad_stop, s.n_stop_token_ids = 1; }),
                     "stop_token_ids[0]"), bad);
  CHECK_EQ(status_of(ok, with([](gptoss_sampling& s) { s.n_stop_token_ids = 2; }), "stop_token_ids"), bad);
  CHECK_EQ(h.stats().waiting, 0);
  CHECK_EQ(h.stats().steps, 0u);
}

TEST(engine_creation_errors_name_the_problem) {
  // Creates an engine from the base config changed by `mutate`; returns the status.
  auto create_status = [](auto mutate, const char* expect_in_message) {
    gptoss_engine_config cfg = base_config();
    mutate(cfg);
    gptoss_engine* engine = nullptr;
    char err[512] = "";
    const int status = gptoss_engine_create(&cfg, &EventCollector::c_callback, nullptr, &engine, err, sizeof err);
    if (std::string(err).find(expect_in_message) == std::string::npos) {
      fail_check(__FILE__, __LINE__, std::string("message '") + err + "' lacks '" + expect_in_message + "'");
    }
    if (engine) gptoss_engine_destroy(engine);
    return status;
  };
  using Cfg = gptoss_engine_config;
  CHECK_EQ(create_status([](Cfg& c) { c.backend = "cuda", c.tensor_parallel = 1; }, "cuda"), GPTOSS_ERR_BACKEND);
  CHECK_EQ(create_status([](Cfg& c) { c.backend = "tpu"; }, "tpu"), GPTOSS_ERR_INVALID_ARGUMENT);
  CHECK_EQ(create_status([](Cfg& c) { c.tensor_parallel = 0; }, "tensor_parallel = 0"), GPTOSS_ERR_INVALID_ARGUMENT);
  CHECK_EQ(create_status([](Cfg& c) { c.tensor_parallel = 3; }, "2 KV heads"), GPTOSS_ERR_INVALID_ARGUMENT);
  CHECK_EQ(create_status([](Cfg& c) { c.moe_sharding = "rows"; }, "moe_sharding"), GPTOSS_ERR_INVALID_ARGUMENT);
  CHECK_EQ(create_status([](Cfg& c) { c.gpu_memory_utilization = 1.5f; }, "gpu_memory_utilization"),
           GPTOSS_ERR_INVALID_ARGUMENT);
  CHECK_EQ(create_status([](Cfg& c) { c.model_dir = "/nonexistent/model"; }, "/nonexistent/model"), GPTOSS_ERR_MODEL);
  CHECK_EQ(create_status([](Cfg& c) { c.max_num_seqs = 0; }, "max_num_seqs"), GPTOSS_ERR_INVALID_ARGUMENT);
  CHECK_EQ(create_status([](Cfg& c) { c.kv_cache_bytes = 1000; }, "kv_cache_bytes"), GPTOSS_ERR_CAPACITY);
}

// A shared 100-token "system prompt", then a turn of `turn` tokens of its own.
std::vector<int32_t> conversation(int32_t turn, int32_t which) {
  std::vector<int32_t> p = prompt_of_length(100, 9);
  const std::vector<int32_t> own = prompt_of_length(turn, 100 + which);
  p.insert(p.end(), own.begin(), own.end());
  return p;
}

TEST(prefix_caching_changes_no_bit_of_greedy_tokens_or_logprobs) {
  gptoss_sampling s = greedy(8);
  s.top_logprobs = 5;
  // Block size 4: the sliding window (16) spans several blocks at the reuse point.
  auto run_all = [&](bool caching, std::vector<int32_t>* cached) {
    gptoss_engine_config cfg = base_config();
    cfg.block_size = 4;
    cfg.max_batched_tokens = 64;  // the shared prompt is computed over two chunks
    cfg.disable_prefix_caching = caching ? 0 : 1;
    EngineHandle h(cfg);
    std::vector<std::vector<gptoss_event>> out;
    // One after another (each later one hits), then four at once.
    for (int32_t i = 0; i < 3; ++i) out.push_back(h.events.wait_finished(h.submit(conversation(3 + i, i), s, "t")));
    std::vector<uint64_t> ids;
    for (int32_t i = 3; i < 7; ++i) ids.push_back(h.submit(conversation(3 + i, i), s, "t"));
    for (uint64_t id : ids) out.push_back(h.events.wait_finished(id));
    for (const auto& ev : out) cached->push_back(ev.back().cached_tokens);
    return out;
  };
  std::vector<int32_t> cached_on, cached_off;
  const auto with = run_all(true, &cached_on);
  const auto without = run_all(false, &cached_off);
  CHECK_EQ(with.size(), without.size());
  for (size_t r = 0; r < with.size() && r < without.size(); ++r) {
    CHECK_EQ(with[r].size(), without[r].size());
    for (size_t i = 0; i < with[r].size() && i < without[r].size(); ++i) {
      const gptoss_event& a = with[r][i];
      const gptoss_event& b = without[r][i];
      CHECK_EQ(a.token, b.token);
      CHECK(std::memcmp(&a.logprob, &b.logprob, sizeof a.logprob) == 0);
      CHECK(std::memcmp(a.top_logprobs, b.top_logprobs, sizeof a.top_logprobs) == 0);
      CHECK(std::memcmp(a.top_ids, b.top_ids, sizeof a.top_ids) == 0);
    }
    CHECK_EQ(cached_off[r], 0);
  }
  CHECK_EQ(cached_on[0], 0);
  for (size_t r = 1; r < cached_on.size(); ++r) CHECK_EQ(cached_on[r], 100);  // 25 blocks of 4
}

// Two ranks, batched with chunked prefill and preempted by a small KV cache,
// in both MoE layouts, give one rank's greedy outputs run alone. (Sampled
// outputs may differ where a draw falls within float32 rounding of a
// boundary: the ranks' logits differ from one rank's by ~1e-6.)
TEST(sharded_engine_gives_the_greedy_outputs_of_one_rank) {
  const std::vector<std::vector<int32_t>> prompts = mixed_prompts();
  gptoss_engine_config one = base_config();
  one.tensor_parallel = 1;
  std::vector<std::vector<int32_t>> expected;
  {
    EngineHandle h(one);
    for (const auto& p : prompts) expected.push_back(tokens_of(h.events.wait_finished(h.submit(p, greedy(12)))));
  }
  for (const char* moe : {"intermediate", "experts"}) {
    gptoss_engine_config two = base_config();
    two.tensor_parallel = 2;
    two.moe_sharding = moe;
    two.max_batched_tokens = 40;
    two.kv_cache_bytes = 160 * 1024;  // far fewer blocks than 16 sequences want: queueing and preemption
    EngineHandle h(two);
    CHECK(h.stats().kv_blocks_total < 64);
    std::vector<uint64_t> ids;
    for (const auto& p : prompts) ids.push_back(h.submit(p, greedy(12)));
    for (size_t i = 0; i < prompts.size(); ++i) CHECK(tokens_of(h.events.wait_finished(ids[i])) == expected[i]);
    CHECK_EQ(h.stats().kv_blocks_used, 0);
  }
}

TEST(model_info_and_logprobs_from_the_real_model) {
  EngineHandle h(base_config());
  gptoss_model_info info;
  gptoss_get_model_info(h.engine, &info);
  CHECK_EQ(info.vocab_size, 201088);
  CHECK_EQ(info.num_layers, 4);
  CHECK_EQ(info.max_model_len, 512);
  CHECK(info.weight_bytes > 1000000u);
  gptoss_sampling s = greedy(3);
  s.top_logprobs = 20;
  for (const gptoss_event& e : h.events.wait_finished(h.submit({5, 6, 7}, s))) {
    CHECK_EQ(e.n_top, 20);
    CHECK_EQ(e.top_ids[0], e.token);
    double mass = 0;
    for (int i = 0; i < e.n_top; ++i) mass += std::exp(e.top_logprobs[i]);
    CHECK(mass > 0.0 && mass <= 1.0 + 1e-5);
    CHECK(e.logprob <= 0.0f);
  }
}

// Constrained decoding: the bitmask that allows exactly `ids`.
std::vector<uint32_t> mask_of(const std::vector<int32_t>& ids) {
  std::vector<uint32_t> mask((201088 + 31) / 32, 0u);
  for (int32_t id : ids) mask[id >> 5] |= 1u << (id & 31);
  return mask;
}

TEST(a_constrained_request_samples_only_what_each_mask_allows) {
  EngineHandle h(base_config());
  gptoss_sampling s = greedy(6);
  s.temperature = 1.0f, s.seed = 7, s.has_seed = 1, s.constrained = 1;
  const uint64_t free_id = h.submit(prompt_of_length(20, 1), greedy(6));  // batched beside it, unconstrained
  const uint64_t id = h.submit(prompt_of_length(12, 2), s);
  char err[256];
  for (int32_t position = 0; position < 6; ++position) {
    // The caller sees token n-1 before it hands over mask n, as the worker does.
    CHECK(wait_until([&] { return tokens_of(h.events.events_of(id)).size() == size_t(position); }));
    const std::vector<uint32_t> mask = mask_of({1000 + position * 3, 1001 + position * 3});
    CHECK_EQ(gptoss_set_token_mask(h.engine, id, position, mask.data(), mask.size(), err, sizeof err), GPTOSS_OK);
  }
  const std::vector<int32_t> tokens = tokens_of(h.events.wait_finished(id));
  CHECK_EQ(tokens.size(), size_t(6));
  for (size_t i = 0; i < tokens.size(); ++i) CHECK(tokens[i] == 1000 + int32_t(i) * 3 || tokens[i] == 1001 + int32_t(i) * 3);
  CHECK_EQ(tokens_of(h.events.wait_finished(free_id)).size(), size_t(6));
}

TEST(a_mask_that_never_comes_ends_the_request_with_mask_timeout_and_spares_the_batch) {
  gptoss_engine_config cfg = base_config();
  cfg.token_mask_timeout_ms = 50;
  EngineHandle h(cfg);
  gptoss_sampling s = greedy(4);
  s.constrained = 1;
  const uint64_t id = h.submit(prompt_of_length(8, 3), s);
  const uint64_t free_id = h.submit(prompt_of_length(8, 4), greedy(4));
  const std::vector<gptoss_event> events = h.events.wait_finished(id);
  CHECK_EQ(events.size(), size_t(1));
  CHECK_EQ(events.back().finish, GPTOSS_FINISH_MASK_TIMEOUT);
  CHECK_EQ(events.back().token, -1);
  CHECK_EQ(tokens_of(h.events.wait_finished(free_id)).size(), size_t(4));
  CHECK(wait_until([&] { return h.stats().running == 0; }));
}

TEST(cancelling_a_request_that_waits_for_its_mask_ends_it_cancelled_at_once) {
  EngineHandle h(base_config());  // the default 10 s timeout
  gptoss_sampling s = greedy(4);
  s.constrained = 1;
  const uint64_t id = h.submit(prompt_of_length(8, 5), s);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto started = std::chrono::steady_clock::now();
  CHECK_EQ(gptoss_cancel(h.engine, id), GPTOSS_OK);
  const std::vector<gptoss_event> events = h.events.wait_finished(id);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));
  CHECK_EQ(events.back().finish, GPTOSS_FINISH_CANCELLED);
  CHECK(tokens_of(events).empty());
}

TEST(set_token_mask_refuses_a_wrong_size_and_an_empty_mask_and_drops_an_ended_request) {
  EngineHandle h(base_config());
  char err[256] = "";
  std::vector<uint32_t> mask = mask_of({42});
  CHECK_EQ(gptoss_set_token_mask(h.engine, 12345, 0, mask.data(), mask.size(), err, sizeof err), GPTOSS_OK);
  CHECK_EQ(gptoss_set_token_mask(h.engine, 1, 0, mask.data(), mask.size() - 1, err, sizeof err),
           GPTOSS_ERR_INVALID_ARGUMENT);
  CHECK(std::string(err).find("words") != std::string::npos);
  const std::vector<uint32_t> empty = mask_of({});
  CHECK_EQ(gptoss_set_token_mask(h.engine, 1, 0, empty.data(), empty.size(), err, sizeof err),
           GPTOSS_ERR_INVALID_ARGUMENT);
  CHECK(std::string(err).find("allows no token") != std::string::npos);
}

TEST_MAIN()
