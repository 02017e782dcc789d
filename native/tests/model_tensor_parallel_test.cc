// Tensor parallelism on the CPU runner, the oracle of the sharding: N ranks in
// one process must give the logits of one rank within float32 rounding (the
// all-reduces and the split output projection change the order of a few
// sums, nothing else) and the same greedy tokens, on generated tiny and small
// checkpoints, in both MoE layouts, for several sequences batched with
// chunked prefill over prompts longer than the sliding window. Also: the
// plan's ranges at the gpt-oss-20b shape, views without copies at one rank,
// the errors of shapes that do not divide, and gptoss-cli
// --tensor-parallel-size 2 printing one rank's greedy tokens.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "backend/model_runner.h"
#include "model/tensor_parallel.h"
#include "model/weights.h"
#include "model_test_support.h"

using namespace gptoss;
using gptoss::test::check;
using gptoss::test::expect_error;

namespace {

// A few float32 roundings amplified through 4-6 layers; a wrong shard (a
// missing bias, a head on the wrong rank) moves logits by 1e-2 or more.
constexpr double kMaxRelativeError = 1e-5;
constexpr int32_t kChunk = 7;
constexpr int32_t kDecodeSteps = 16;

// Every logits row of every sequence in step order, and its greedy tokens.
struct Trace {
  std::vector<std::vector<std::vector<float>>> rows;  // [sequence][row][vocab]
  std::vector<std::vector<int32_t>> greedy;
};

std::vector<std::vector<int32_t>> prompts_for(int32_t vocab) {
  std::vector<std::vector<int32_t>> prompts;
  for (int32_t len : {5, 23, 41}) {  // beyond both generated sliding windows (8, 16)
    std::vector<int32_t> p;
    for (int32_t i = 0; i < len; ++i) p.push_back((i * 7919 + len * 104729 + 3) % vocab);
    prompts.push_back(p);
  }
  return prompts;
}

// All sequences in every step: prompts prefilled kChunk tokens at a time side
// by side (a sequence whose prompt is done decodes beside the others' chunks),
// then greedy decode until each has kDecodeSteps tokens.
Trace run(ModelRunner& runner, const std::vector<std::vector<int32_t>>& prompts) {
  const int32_t vocab = runner.config().vocab_size;
  const int32_t n = static_cast<int32_t>(prompts.size());
  int32_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, static_cast<int32_t>(p.size()));
  test::PlanBuilder plans(runner.config(), n, longest + kDecodeSteps + 1);
  runner.allocate_kv_cache(plans.kv_shape());
  Trace trace;
  trace.rows.resize(n);
  trace.greedy.resize(n);
  std::vector<int32_t> pos(n, 0);
  std::vector<float> logits;
  while (true) {
    std::vector<int32_t> in_plan;
    for (int32_t s = 0; s < n; ++s) {
      const int32_t len = static_cast<int32_t>(prompts[s].size());
      if (pos[s] < len) {
        const int32_t end = std::min(len, pos[s] + kChunk);
        plans.add(s, std::vector<int32_t>(prompts[s].begin() + pos[s], prompts[s].begin() + end), pos[s], end == len);
        if (end == len) in_plan.push_back(s);
        pos[s] = end;
      } else if (static_cast<int32_t>(trace.greedy[s].size()) < kDecodeSteps) {
        plans.add(s, {trace.greedy[s].back()}, pos[s]++, true);
        in_plan.push_back(s);
      }
    }
    if (in_plan.empty()) break;
    runner.forward(plans.take(), logits);
    for (size_t r = 0; r < in_plan.size(); ++r) {
      const float* row = logits.data() + r * vocab;
      trace.rows[in_plan[r]].emplace_back(row, row + vocab);
      trace.greedy[in_plan[r]].push_back(test::argmax(row, vocab));
    }
  }
  return trace;
}

void check_same(const Trace& ranks, const Trace& one, const std::string& label) {
  double worst = 0.0;
  for (size_t s = 0; s < one.rows.size(); ++s) {
    check(ranks.greedy[s] == one.greedy[s], label + ": greedy tokens of sequence " + std::to_string(s) + " differ");
    for (size_t r = 0; r < one.rows[s].size(); ++r) {
      double max_diff = 0.0, max_ref = 0.0;
      for (size_t v = 0; v < one.rows[s][r].size(); ++v) {
        max_diff = std::max(max_diff, std::fabs(double(ranks.rows[s][r][v]) - one.rows[s][r][v]));
        max_ref = std::max(max_ref, std::fabs(double(one.rows[s][r][v])));
      }
      worst = std::max(worst, max_diff / max_ref);
    }
  }
  std::printf("%s: max relative logits error %.2e over %zu sequences\n", label.c_str(), worst, one.rows.size());
  check(worst <= kMaxRelativeError, label + ": logits differ by " + std::to_string(worst));
}

void check_model(const std::string& model, const std::string& name, const std::vector<int32_t>& world_sizes) {
  const auto reference = make_cpu_runner(model, 2);
  const std::vector<std::vector<int32_t>> prompts = prompts_for(reference->config().vocab_size);
  const Trace one = run(*reference, prompts);
  for (int32_t world : world_sizes) {
    for (MoeSharding moe : {MoeSharding::Intermediate, MoeSharding::Experts}) {
      const auto sharded = make_cpu_runner(model, 2, world, moe);
      check_same(run(*sharded, prompts), one,
                 name + " TP=" + std::to_string(world) + " moe_sharding " + moe_sharding_name(moe));
    }
  }
}

ModelConfig gpt_oss_20b_shape() {
  ModelConfig c;
  c.num_layers = 24;
  c.hidden_size = 2880;
  c.intermediate_size = 2880;
  c.num_q_heads = 64;
  c.num_kv_heads = 8;
  c.head_dim = 64;
  c.num_experts = 32;
  c.experts_per_token = 4;
  c.vocab_size = 201088;
  return c;
}

void check_plan_ranges() {
  const ModelConfig c = gpt_oss_20b_shape();
  const TensorParallelPlan columns(c, 2, MoeSharding::Intermediate);
  check(columns.q_heads(1).begin == 32 && columns.q_heads(1).end == 64, "rank 1 holds q heads [32, 64)");
  check(columns.kv_heads(1).begin == 4 && columns.kv_heads(1).end == 8, "rank 1 holds KV heads [4, 8)");
  check(columns.intermediate(1).begin == 1440 && columns.intermediate(1).size() == 1440,
        "rank 1 holds intermediate columns [1440, 2880)");
  check(columns.experts(1).size() == 32, "columns split: every rank runs every expert");
  check(columns.vocab(0).end == 100544 && columns.vocab(1).begin == 100544 && columns.vocab(1).end == 201088,
        "vocabulary split at 100544");
  const TensorParallelPlan experts(c, 2, MoeSharding::Experts);
  check(experts.experts(1).begin == 16 && experts.experts(1).end == 32, "rank 1 holds experts [16, 32)");
  check(experts.intermediate(1).size() == 2880, "experts split: whole experts");
  const TensorParallelPlan eight(c, 8, MoeSharding::Experts);
  check(eight.kv_heads(7).begin == 7 && eight.q_heads(7).begin == 56, "TP=8: one KV head and its 8 q heads a rank");
  expect_error("16 ranks over 8 KV heads", GPTOSS_ERR_INVALID_ARGUMENT, {"tensor_parallel = 16", "8 KV heads"},
               [&] { TensorParallelPlan(c, 16, MoeSharding::Intermediate); });
  expect_error("zero ranks", GPTOSS_ERR_INVALID_ARGUMENT, {">= 1"}, [&] { TensorParallelPlan(c, 0, MoeSharding::Experts); });
  expect_error("unknown layout", GPTOSS_ERR_INVALID_ARGUMENT, {"\"rows\"", "intermediate", "experts"},
               [] { parse_moe_sharding("rows"); });
}

void check_one_rank_is_the_checkpoint(const std::string& model) {
  const ModelConfig c = load_model_config(model);
  const Weights w = load_weights(model, c);
  const WeightShard s = shard_weights(w, c, TensorParallelPlan(c, 1, MoeSharding::Intermediate), 0);
  check(s.storage.empty(), "one rank copies nothing");
  const LayerWeights& a = s.layers[1];
  const LayerWeights& b = w.layers[1];
  check(a.o_weight == b.o_weight && a.o_bias == b.o_bias && a.q_weight == b.q_weight && a.sinks == b.sinks,
        "one rank: attention views are the checkpoint's tensors");
  check(a.gate_up.blocks == b.gate_up.blocks && a.down.scales == b.down.scales && a.down.bias == b.down.bias &&
            a.gate_up.rows == b.gate_up.rows && a.down.cols == b.down.cols,
        "one rank: expert views are the checkpoint's tensors");
  check(s.lm_head == w.lm_head, "one rank: the whole unembedding");

  const WeightShard r1 = shard_weights(w, c, TensorParallelPlan(c, 2, MoeSharding::Intermediate), 1);
  check(r1.layers[0].o_bias == nullptr && r1.layers[0].down.bias == nullptr, "rank 1 adds no bias rank 0 adds");
  check(r1.layers[0].gate_up.rows == c.intermediate_size && r1.layers[0].down.cols == c.intermediate_size / 2,
        "rank 1 holds half of every expert's columns");
  check(r1.lm_head == w.lm_head + static_cast<int64_t>(c.vocab_size / 2) * c.hidden_size,
        "rank 1's unembedding starts at its vocabulary rows");
}

// The request lines gptoss-cli prints (its timing line differs run to run).
std::string cli_tokens(const std::string& model, const std::string& flags) {
  const std::string cmd = "./gptoss-cli --model '" + model + "' --prompt 3,1,4,1,5,9,2,6,5,3,5,8,9,7,9,3,2,3,8,4 "
                          "--batch 3 --max-tokens 24 --threads 2 " + flags;
  FILE* pipe = popen(cmd.c_str(), "r");
  check(pipe != nullptr, "cannot run " + cmd);
  std::string requests;
  char line[4096];
  while (std::fgets(line, sizeof line, pipe)) {
    if (std::string(line).rfind("request ", 0) == 0) requests += line;
  }
  check(pclose(pipe) == 0, cmd + " failed");
  return requests;
}

void check_cli(const std::string& model) {
  const std::string one = cli_tokens(model, "");
  check(one.find("request 2 (length):") != std::string::npos, "gptoss-cli printed three finished requests:\n" + one);
  for (const char* moe : {"intermediate", "experts"}) {
    const std::string two = cli_tokens(model, std::string("--tensor-parallel-size 2 --moe-sharding ") + moe);
    check(two == one, std::string("gptoss-cli TP=2 (") + moe + ") printed\n" + two + "TP=1 printed\n" + one);
  }
  std::printf("gptoss-cli --tensor-parallel-size 2: the greedy tokens of TP=1\n");
}

}  // namespace

int main() {
  check_plan_ranges();
  const test::ScratchDir dir("tp-test");
  test::generate_model("--preset tiny --seed 5", dir / "tiny");
  test::generate_model("--preset small --seed 6", dir / "small");
  // Four whole GQA groups and 8 experts: four ranks in both layouts.
  test::generate_model("--preset small --heads 8 --kv-heads 4 --seed 7", dir / "small4");
  check_one_rank_is_the_checkpoint(dir / "tiny");
  check_model(dir / "tiny", "tiny", {2});
  check_cli(dir / "tiny");
  check_model(dir / "small", "small", {2});
  check_model(dir / "small4", "small (4 KV heads)", {2, 4});

  // Shapes that do not divide fail at load, naming the dimension.
  expect_error("3 ranks over 2 KV heads", GPTOSS_ERR_INVALID_ARGUMENT, {"tensor_parallel = 3", "2 KV heads"},
               [&] { make_cpu_runner(dir / "tiny", 1, 3); });
  test::generate_model("--preset small --intermediate 96 --seed 8", dir / "odd");
  expect_error("96 columns over 2 ranks", GPTOSS_ERR_INVALID_ARGUMENT, {"intermediate size 96", "MXFP4"},
               [&] { make_cpu_runner(dir / "odd", 1, 2, MoeSharding::Intermediate); });
  check_same(run(*make_cpu_runner(dir / "odd", 2, 2, MoeSharding::Experts), prompts_for(4096)),
             run(*make_cpu_runner(dir / "odd", 2), prompts_for(4096)), "96 columns, experts split whole");
  std::printf("model_tensor_parallel_test: ok\n");
  return 0;
}
