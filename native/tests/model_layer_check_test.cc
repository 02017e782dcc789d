// The teacher-forced layer check (backend/layer_check.h) on the CPU: the
// reference checked against itself finds no difference, on every position or
// on the sampled ones (so the sample's K/V reach every position it reads);
// its residual stream after the last layer gives the CPU runner's logits bit
// for bit; a batch of sequences keeps each one's rows apart; and a backend
// with a wrong MoE output or wrong expert choices is caught at the layer that
// is wrong.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "backend/cpu/ops.h"
#include "backend/layer_check.h"
#include "model/weights.h"
#include "model_test_support.h"

using namespace gptoss;
using gptoss::test::check;

namespace {

const char* kModelArgs = "--preset tiny --vocab 2048 --seed 5";  // 4 layers, window 16, 4 experts top-2
constexpr int32_t kPrompt = 40;                                    // past the sliding window
constexpr int32_t kDecode = 3;

std::vector<int32_t> sequence_tokens() {
  std::vector<int32_t> t;
  for (int32_t i = 0; i < kPrompt + kDecode; ++i) t.push_back((i * 7919 + 31) % 2048);
  return t;
}

// The reference with one layer made wrong.
class Faulty final : public LayerUnderTest {
 public:
  enum class Fault { MoeScale, NextExpert, FarExpert, RaisedNext, PastCut, ReorderedPastCut };
  Faulty(const TeacherForcedCheck& check, int32_t layer, Fault fault)
      : reference_(check), config_(check.config()), layer_(layer), fault_(fault) {}
  void run_layer(int32_t layer, const std::vector<LayerCheckSequence>& batch, const std::vector<float>& x,
                 LayerOutputs& out) override {
    reference_.run_layer(layer, batch, x, out);
    if (layer != layer_) return;
    const int32_t E = config_.num_experts, K = config_.experts_per_token;
    for (int32_t r = 0; r < out.rows; ++r) {
      if (fault_ == Fault::MoeScale) {
        for (int32_t d = 0; d < config_.hidden_size; ++d) out.moe[size_t(r) * config_.hidden_size + d] *= 1.05f;
        continue;
      }
      float* logits = &out.router_logits[size_t(r) * E];
      std::vector<int32_t> order(E);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
      int32_t* chosen = &out.experts[size_t(r) * K];
      if (fault_ == Fault::PastCut || fault_ == Fault::ReorderedPastCut) {
        // The (k+1)-th logit's expert in place of the (k-1)-th: past the cut
        // by two ranks, as three logits within the error reorder.
        std::replace(chosen, chosen + K, order[K - 2], order[K]);
        // Reordered: the layer's own logits put the (k+1)-th just above the
        // (k-1)-th and the (k-1)-th just below the k-th, so its choice is its
        // own top k.
        if (fault_ == Fault::ReorderedPastCut) {
          const float above = std::nextafter(logits[order[K - 2]], INFINITY);
          logits[order[K - 2]] = std::nextafter(logits[order[K - 1]], -INFINITY);
          logits[order[K]] = above;
        }
        continue;
      }
      // The (k+1)-th (or (k+2)-th) logit's expert in place of the k-th.
      chosen[K - 1] = order[fault_ == Fault::FarExpert ? K + 1 : K];
      // RaisedNext: the layer's own logits put the (k+1)-th just above the k-th.
      if (fault_ == Fault::RaisedNext) logits[order[K]] = std::nextafter(logits[order[K - 1]], INFINITY);
    }
  }

 private:
  ReferenceLayers reference_;
  const ModelConfig& config_;
  int32_t layer_;
  Fault fault_;
};

LayerCheckSequence all_positions() {
  LayerCheckSequence s{sequence_tokens(), kPrompt, {}};
  s.checked = layer_check_positions(kPrompt, kPrompt + kDecode, 16, /*dense=*/64, /*spread=*/4);
  return s;
}

void expect_exact(const LayerCheckSummary& s, const std::string& what) {
  check(s.failures == 0 && s.router_mismatches == 0 && s.router_near_ties == 0, what + ": no failures");
  for (const LayerCheckWorst* w : {&s.attn, &s.router_logits, &s.moe, &s.residual})
    check(w->error == 0.0 && w->layer >= 0, what + ": every output identical in every layer");
}

}  // namespace

int main() {
  test::ScratchDir dir("layer-check");
  const std::string model = dir / "model";
  test::generate_model(kModelArgs, model);
  const ModelConfig config = load_model_config(model);
  const Weights weights = load_weights(model, config);
  ThreadPool pool(2);

  // Which positions a long sequence checks.
  const std::vector<int32_t> sample = layer_check_positions(300, 304, 128, 64, 3);
  check(sample == std::vector<int32_t>({0, 1, 2, 3, 75, 126, 127, 128, 129, 150, 225, 296, 297, 298, 299, 300, 301,
                                        302, 303}),
        "sampled positions: first rows, the window's edge, spread rows, the prompt's tail, every decode step");
  check(layer_check_positions(5, 7, 128, 64, 3) == std::vector<int32_t>({0, 1, 2, 3, 4, 5, 6}),
        "a short sequence checks every position");

  // The reference against itself, every position.
  const LayerCheckSequence dense = all_positions();
  check(dense.checked.size() == kPrompt + kDecode, "dense: every position checked");
  TeacherForcedCheck self(config, weights, &pool, LayerCheckTolerances{});
  ReferenceLayers reference(self);
  const std::vector<float> x_out = self.run("self", {dense}, reference);
  expect_exact(self.summary(), "self-check, every position");
  check(self.summary().router_rows == int64_t(config.num_layers) * (kPrompt + kDecode), "every row's choice compared");

  // The residual stream after the last layer gives the CPU runner's logits
  // for the last decode step, bit for bit.
  {
    auto runner = make_cpu_runner(model, 1);
    test::PlanBuilder plans(config, 1, kPrompt + kDecode, 4);
    runner->allocate_kv_cache(plans.kv_shape());
    const std::vector<int32_t> t = dense.tokens;
    std::vector<float> logits;
    plans.add(0, std::vector<int32_t>(t.begin(), t.begin() + kPrompt), 0, true);
    runner->forward(plans.take(), logits);
    for (int32_t p = kPrompt; p < kPrompt + kDecode; ++p) {
      plans.add(0, {t[p]}, p, true);
      runner->forward(plans.take(), logits);
    }
    std::vector<float> last(x_out.end() - config.hidden_size, x_out.end()), ours(config.vocab_size);
    cpu::rmsnorm(last.data(), 1, config.hidden_size, weights.final_norm, config.rms_norm_eps, last.data());
    cpu::linear_bf16(last.data(), 1, config.hidden_size, weights.lm_head, nullptr, config.vocab_size, ours.data(), nullptr);
    check(std::memcmp(ours.data(), logits.data(), logits.size() * sizeof(float)) == 0,
          "layer-by-layer reference == CPU runner logits, bitwise");
  }

  // The reference against itself on a sample: the sampled rows' K/V windows.
  LayerCheckSequence sampled = dense;
  sampled.checked = layer_check_positions(kPrompt, kPrompt + kDecode, config.sliding_window, 8, 3);
  check(sampled.checked.size() < dense.checked.size(), "sampled: fewer positions");
  TeacherForcedCheck sparse(config, weights, &pool, LayerCheckTolerances{});
  ReferenceLayers reference2(sparse);
  sparse.run("sampled", {sampled}, reference2);
  expect_exact(sparse.summary(), "self-check, sampled positions");

  // A batch: three sequences of different prompt lengths and the same number
  // of decode steps, one of them unchecked; exact, and each sequence's rows
  // are its own (the last layer's residual of the checked single sequence
  // is found again at its place in the batch).
  {
    LayerCheckSequence a = dense, b{std::vector<int32_t>(dense.tokens.begin() + 7, dense.tokens.end()), kPrompt - 7, {}},
                       d{std::vector<int32_t>(dense.tokens.begin(), dense.tokens.begin() + 20), 20 - kDecode, {}};
    d.checked = layer_check_positions(d.n_prompt, 20, config.sliding_window, 64, 2);
    TeacherForcedCheck c(config, weights, &pool, LayerCheckTolerances{});
    ReferenceLayers r(c);
    const std::vector<float> out = c.run("batch", {b, a, d}, r);
    expect_exact(c.summary(), "self-check, a batch of three");
    check(c.summary().router_rows == int64_t(config.num_layers) * (kPrompt + kDecode + 20), "checked rows of two sequences");
    const size_t first_a = b.tokens.size() * config.hidden_size;
    check(std::equal(x_out.begin(), x_out.end(), out.begin() + first_a), "sequence a's rows unchanged in the batch");
  }

  // A wrong MoE output at layer 2 fails that layer and no other.
  {
    TeacherForcedCheck c(config, weights, &pool, LayerCheckTolerances{});
    Faulty faulty(c, 2, Faulty::Fault::MoeScale);
    c.run("moe x1.05", {dense}, faulty);
    const LayerCheckSummary& s = c.summary();
    check(s.failures == 1 && s.worst_layer == 2 && s.worst_what == "moe output (moe x1.05)", "moe fault found at layer 2");
    check(s.moe.layer == 2 && s.moe.error > 0.04 && s.moe.error < 0.06, "moe error is the 5 % injected");
    check(s.router_mismatches == 0, "moe fault: choices still agree");
  }
  // The (k+1)-th expert chosen at layer 1: mismatches, not near ties (a tie
  // that close is unlikely in 43 random rows), and only at that layer.
  {
    TeacherForcedCheck c(config, weights, &pool, LayerCheckTolerances{});
    Faulty faulty(c, 1, Faulty::Fault::NextExpert);
    c.run("next expert", {dense}, faulty);
    const LayerCheckSummary& s = c.summary();
    check(s.router_mismatches + s.router_near_ties == kPrompt + kDecode, "every row of layer 1 differs");
    check(s.router_mismatches > s.router_near_ties, "most are counted as mismatches");
    check(s.failures == 1, "only layer 1 fails");
  }
  // The same swap where the layer's own router logits order the two that
  // way: explained by the measured logit error (which the router tolerance
  // judges), so a tie of that kind and never a mismatch.
  {
    TeacherForcedCheck c(config, weights, &pool, LayerCheckTolerances{});
    Faulty faulty(c, 1, Faulty::Fault::RaisedNext);
    c.run("raised next", {dense}, faulty);
    const LayerCheckSummary& s = c.summary();
    check(s.router_mismatches == 0 && s.router_error_ties + s.router_near_ties == kPrompt + kDecode,
          "a swap the layer's own logits explain is a tie within the measured error");
    check(s.router_error_ties > 0, "counted as such");
  }
  // The (k+1)-th expert in place of the (k-1)-th: a mismatch where the
  // layer's own logits still rank the dropped one higher, a tie within the
  // measured error where they reorder the three.
  {
    TeacherForcedCheck c(config, weights, &pool, LayerCheckTolerances{});
    Faulty faulty(c, 2, Faulty::Fault::PastCut);
    c.run("past the cut", {dense}, faulty);
    const LayerCheckSummary& s = c.summary();
    check(s.router_mismatches == kPrompt + kDecode && s.router_error_ties == 0,
          "a choice against the layer's own logits is a mismatch at any rank");
    check(s.failures == 1 && s.worst_layer == 2, "only layer 2 fails");
  }
  {
    TeacherForcedCheck c(config, weights, &pool, LayerCheckTolerances{});
    Faulty faulty(c, 2, Faulty::Fault::ReorderedPastCut);
    c.run("reordered past the cut", {dense}, faulty);
    const LayerCheckSummary& s = c.summary();
    check(s.router_mismatches == 0 && s.router_error_ties == kPrompt + kDecode,
          "a reorder past the cut that the layer's own logits explain is a tie within the measured error");
  }
  // The (k+2)-th expert: never a near tie, whatever the gap.
  {
    TeacherForcedCheck c(config, weights, &pool, LayerCheckTolerances{});
    Faulty faulty(c, 3, Faulty::Fault::FarExpert);
    c.run("far expert", {dense}, faulty);
    const LayerCheckSummary& s = c.summary();
    check(s.router_mismatches == kPrompt + kDecode && s.router_near_ties == 0 && s.router_error_ties == 0,
          "a far expert is always a mismatch");
    check(s.failures == 1 && s.worst_layer == 3, "only layer 3 fails");
  }
  std::printf("model_layer_check_test: OK\n");
  return 0;
}
