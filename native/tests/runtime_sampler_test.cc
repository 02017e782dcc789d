// Sampler: each knob's effect, seeded determinism, log-probabilities.
#include "runtime/sampler.h"

#include <cmath>
#include <map>
#include <set>

#include "runtime_test_support.h"

using namespace gptoss;

namespace {

constexpr int32_t kVocab = 8;
// Probabilities roughly .46 .25 .14 .07 .04 .02 .01 .01 at temperature 1.
const std::vector<float> kLogits = {3.0f, 2.4f, 1.8f, 1.1f, 0.5f, -0.2f, -0.9f, -1.0f};
const std::unordered_map<int32_t, int32_t> kNoHistory;

SamplingParams sampled(uint64_t seed = 42) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = seed;
  return p;
}

// Which tokens come out over many draws with the given params.
std::map<int32_t, int> histogram(const SamplingParams& p, int draws = 4000,
                                 const std::vector<float>& logits = kLogits) {
  Sampler s(kVocab);
  std::map<int32_t, int> h;
  for (int i = 0; i < draws; ++i) ++h[s.sample(logits.data(), p, kNoHistory, i).token];
  return h;
}

}  // namespace

TEST(greedy_takes_the_argmax_lowest_id_on_ties) {
  Sampler s(kVocab);
  SamplingParams p;
  CHECK_EQ(s.sample(kLogits.data(), p, kNoHistory, 0).token, 0);
  const std::vector<float> tied = {0, 5, 1, 5, 0, 0, 0, 0};
  CHECK_EQ(s.sample(tied.data(), p, kNoHistory, 0).token, 1);
}

TEST(temperature_sampling_follows_the_softmax) {
  const std::map<int32_t, int> h = histogram(sampled());
  double z = 0;
  for (float l : kLogits) z += std::exp(l);
  for (int32_t t = 0; t < 3; ++t) {
    const double expected = std::exp(kLogits[t]) / z;
    CHECK(std::abs(h.at(t) / 4000.0 - expected) < 0.03);
  }
}

TEST(low_temperature_sharpens_high_temperature_flattens) {
  SamplingParams cold = sampled();
  cold.temperature = 0.1f;
  CHECK(histogram(cold)[0] > 3950);
  SamplingParams hot = sampled();
  hot.temperature = 5.0f;
  const std::map<int32_t, int> h = histogram(hot);
  CHECK(h.at(7) > 250);  // near uniform: 1/8 of 4000 = 500
}

TEST(top_k_keeps_the_k_most_likely) {
  SamplingParams p = sampled();
  p.top_k = 2;
  const std::map<int32_t, int> h = histogram(p);
  CHECK_EQ(h.size(), 2u);
  CHECK(h.count(0) == 1 && h.count(1) == 1);
}

TEST(top_p_keeps_the_smallest_set_reaching_p) {
  SamplingParams p = sampled();
  p.top_p = 0.6f;  // .46 alone is short of .6; .46 + .25 reaches it
  const std::map<int32_t, int> h = histogram(p);
  CHECK_EQ(h.size(), 2u);
  p.top_p = 0.3f;
  CHECK_EQ(histogram(p).size(), 1u);
}

TEST(min_p_drops_tokens_below_a_share_of_the_best) {
  SamplingParams p = sampled();
  p.min_p = 0.25f;  // keeps p >= .25 * .46: tokens 0, 1, 2
  const std::map<int32_t, int> h = histogram(p);
  CHECK_EQ(h.size(), 3u);
  CHECK(h.count(3) == 0);
}

TEST(presence_and_frequency_penalties_push_repeated_tokens_down) {
  Sampler s(kVocab);
  SamplingParams p;
  p.presence_penalty = 0.7f;  // 3.0 - 0.7 = 2.3 < 2.4
  const std::unordered_map<int32_t, int32_t> once = {{0, 1}};
  CHECK_EQ(s.sample(kLogits.data(), p, once, 0).token, 1);
  p.presence_penalty = 0.0f;
  p.frequency_penalty = 0.4f;  // once: 2.6 still wins; twice: 2.2 loses
  CHECK_EQ(s.sample(kLogits.data(), p, once, 0).token, 0);
  const std::unordered_map<int32_t, int32_t> twice = {{0, 2}};
  CHECK_EQ(s.sample(kLogits.data(), p, twice, 0).token, 1);
  p.frequency_penalty = -2.0f;  // negative penalties encourage repetition: 1.8 + 2 > 3.0
  const std::unordered_map<int32_t, int32_t> seen = {{2, 1}};
  CHECK_EQ(s.sample(kLogits.data(), p, seen, 0).token, 2);
}

TEST(seeded_draws_depend_only_on_seed_and_counter) {
  Sampler a(kVocab);
  Sampler b(kVocab);
  SamplingParams p = sampled(7);
  std::vector<int32_t> first;
  for (int i = 0; i < 64; ++i) first.push_back(a.sample(kLogits.data(), p, kNoHistory, i).token);
  // Interleave other seeds in `b`: the sampler holds no RNG state between calls.
  SamplingParams other = sampled(8);
  int same = 0;
  for (int i = 0; i < 64; ++i) {
    b.sample(kLogits.data(), other, kNoHistory, i);
    CHECK_EQ(b.sample(kLogits.data(), p, kNoHistory, i).token, first[i]);
    same += b.sample(kLogits.data(), other, kNoHistory, i).token == first[i];
  }
  CHECK(same < 60);  // another seed gives another sequence
  std::set<int32_t> distinct(first.begin(), first.end());
  CHECK(distinct.size() >= 3);
}

TEST(logprobs_are_the_processed_distribution) {
  Sampler s(kVocab);
  SamplingParams p = sampled();
  p.top_logprobs = GPTOSS_MAX_TOP_LOGPROBS;
  const SampledToken t = s.sample(kLogits.data(), p, kNoHistory, 3);
  CHECK_EQ(t.n_top, kVocab);  // fewer candidates than asked for
  double total = 0;
  for (int32_t i = 0; i < t.n_top; ++i) {
    total += std::exp(t.top_logprobs[i]);
    if (i > 0) CHECK(t.top_logprobs[i] <= t.top_logprobs[i - 1]);
    if (t.top_ids[i] == t.token) CHECK(std::abs(t.top_logprobs[i] - t.logprob) < 1e-6);
  }
  CHECK(std::abs(total - 1.0) < 1e-5);
  CHECK_EQ(t.top_ids[0], 0);

  // With top_k the distribution is renormalised over the kept tokens.
  p.top_k = 2;
  p.top_logprobs = 5;
  const SampledToken k = s.sample(kLogits.data(), p, kNoHistory, 3);
  CHECK_EQ(k.n_top, 2);
  CHECK(std::abs(std::exp(k.top_logprobs[0]) + std::exp(k.top_logprobs[1]) - 1.0) < 1e-5);
  CHECK(std::abs(k.top_logprobs[0] - k.top_logprobs[1] - 0.6f) < 1e-5);
}

TEST(greedy_logprob_uses_temperature_one) {
  Sampler s(kVocab);
  SamplingParams p;
  p.top_logprobs = 0;
  const SampledToken t = s.sample(kLogits.data(), p, kNoHistory, 0);
  double z = 0;
  for (float l : kLogits) z += std::exp(l);
  CHECK(std::abs(t.logprob - (kLogits[0] - std::log(z))) < 1e-5);
  CHECK_EQ(t.n_top, 0);
}

TEST(a_mask_restricts_greedy_draws_and_logprobs_to_the_allowed_tokens) {
  Sampler s(kVocab);
  const uint32_t allowed = (1u << 2) | (1u << 5);  // tokens 2 and 5
  SamplingParams greedy_p;
  greedy_p.top_logprobs = 4;
  const SampledToken g = s.sample(kLogits.data(), greedy_p, kNoHistory, 0, &allowed);
  CHECK_EQ(g.token, 2);
  CHECK_EQ(g.n_top, 2);  // only allowed tokens are alternatives
  CHECK_EQ(g.top_ids[1], 5);
  CHECK(std::fabs(std::exp(g.top_logprobs[0]) + std::exp(g.top_logprobs[1]) - 1.0) < 1e-5);
  std::set<int32_t> drawn;
  for (int i = 0; i < 2000; ++i) drawn.insert(s.sample(kLogits.data(), sampled(), kNoHistory, i, &allowed).token);
  CHECK(drawn == (std::set<int32_t>{2, 5}));
}

TEST_MAIN()
