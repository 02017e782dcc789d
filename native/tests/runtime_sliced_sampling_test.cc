// Sampling over vocabulary slices (runtime/sliced_sampling.h) against the
// whole-row Sampler: random rows, slicings, masks, penalties and every knob.
#include "runtime/sliced_sampling.h"

#include <cmath>
#include <random>

#include "runtime_test_support.h"

using namespace gptoss;

namespace {

constexpr int32_t kVocab = 3001;  // odd: uneven slices

// Slices of the vocabulary into `n` ascending ranges, uneven when `uneven`.
std::vector<ShardRange> slicing(int32_t n, bool uneven) {
  std::vector<ShardRange> out;
  int32_t begin = 0;
  for (int32_t r = 0; r < n; ++r) {
    const int32_t end = r + 1 == n ? kVocab : begin + kVocab / n + (uneven ? (r % 2 ? -400 : 300) : 0);
    out.push_back({begin, end});
    begin = end;
  }
  return out;
}

struct Row {
  std::vector<float> logits;
  std::unordered_map<int32_t, int32_t> counts;
  std::vector<uint32_t> mask;  // empty: none
};

// Peaked, flat, or coarsely quantized (many exact ties) logits.
Row random_row(std::mt19937_64& rng) {
  Row row;
  row.logits.resize(kVocab);
  const int shape = static_cast<int>(rng() % 3);
  std::normal_distribution<float> normal(0.0f, shape == 1 ? 0.3f : 2.5f);
  for (float& x : row.logits) {
    x = normal(rng);
    if (shape == 2) x = std::round(x * 2.0f) / 2.0f;
  }
  if (shape == 0) {
    for (int i = 0; i < 5; ++i) row.logits[rng() % kVocab] += 9.0f;
  }
  if (rng() % 2) {
    for (int i = 0; i < 30; ++i) row.counts[static_cast<int32_t>(rng() % kVocab)] = 1 + static_cast<int32_t>(rng() % 3);
  }
  if (rng() % 3 == 0) {  // a structured-output mask: dense, sparse, or a single token
    const int density = static_cast<int>(rng() % 3);
    row.mask.assign((kVocab + 31) / 32, 0u);
    for (int32_t id = 0; id < kVocab; ++id) {
      const bool allow = density == 0 ? rng() % 2 == 0 : density == 1 ? rng() % 200 == 0 : id == 1777;
      if (allow) row.mask[id >> 5] |= 1u << (id & 31);
    }
    row.mask[1777 >> 5] |= 1u << (1777 & 31);
  }
  return row;
}

SamplingParams random_params(std::mt19937_64& rng) {
  const float temperatures[] = {0.0f, 0.0f, 0.5f, 1.0f, 1.0f, 1.7f};
  const int32_t top_ks[] = {0, 0, 0, 1, 5, 40, 63, 64, 65, 200};
  const float top_ps[] = {1.0f, 1.0f, 0.9f, 0.5f, 0.99f, 0.2f};
  const float min_ps[] = {0.0f, 0.0f, 0.0f, 0.05f, 0.5f};
  const int32_t top_logprobs[] = {-1, -1, 0, 3, 20};
  SamplingParams p;
  p.temperature = temperatures[rng() % 6];
  p.top_k = top_ks[rng() % 10];
  p.top_p = top_ps[rng() % 6];
  p.min_p = min_ps[rng() % 5];
  p.top_logprobs = top_logprobs[rng() % 5];
  if (rng() % 2) p.frequency_penalty = 0.7f, p.presence_penalty = 0.4f;
  p.seed = rng();
  return p;
}

}  // namespace

// Token, log-probability and top alternatives equal the whole-row Sampler's
// over thousands of rows; every path of the merge runs.
TEST(sliced_sampling_equals_the_whole_row_sampler) {
  std::mt19937_64 rng(16);
  Sampler whole(kVocab);
  SlicedSampler sliced(kVocab);
  int64_t rows = 0, token_mismatches = 0;
  for (int32_t n_slices : {2, 3, 4}) {
    for (bool uneven : {false, true}) {
      const std::vector<ShardRange> ids = slicing(n_slices, uneven);
      for (int i = 0; i < 1500; ++i, ++rows) {
        const Row row = random_row(rng);
        const SamplingParams p = random_params(rng);
        const uint64_t counter = rng() % 1000;
        const uint32_t* allowed = row.mask.empty() ? nullptr : row.mask.data();
        std::vector<const float*> logits;
        for (const ShardRange& r : ids) logits.push_back(row.logits.data() + r.begin);
        const SampledToken a = whole.sample(row.logits.data(), p, row.counts, counter, allowed);
        const SampledToken b = sliced.sample(logits, ids, p, row.counts, counter, allowed);
        if (a.token != b.token) {
          ++token_mismatches;
          continue;
        }
        CHECK(std::abs(a.logprob - b.logprob) <= 1e-5f);
        CHECK_EQ(a.n_top, b.n_top);
        for (int32_t j = 0; j < std::min(a.n_top, b.n_top); ++j) {
          CHECK_EQ(a.top_ids[j], b.top_ids[j]);
          CHECK(std::abs(a.top_logprobs[j] - b.top_logprobs[j]) <= 1e-5f);
        }
      }
    }
  }
  // A walked draw sums the slices' exponentials in another order: only a draw
  // within rounding of a boundary may differ, about never in 9000 rows.
  CHECK(token_mismatches <= 1);
  CHECK(sliced.walked() > 100);
  CHECK(sliced.whole_rows() > 10);
  CHECK(sliced.whole_rows() < rows / 4);
  std::printf("  %lld rows: %lld walked, %lld whole rows, %lld token differences\n", static_cast<long long>(rows),
              static_cast<long long>(sliced.walked()), static_cast<long long>(sliced.whole_rows()),
              static_cast<long long>(token_mismatches));
}

// Greedy is decided from one candidate a slice, ties to the lowest id even
// when the tied tokens sit in different slices.
TEST(greedy_ties_across_slices_take_the_lowest_id) {
  std::vector<float> logits(kVocab, 0.0f);
  logits[2900] = logits[10] = logits[1600] = 4.0f;
  const std::vector<ShardRange> ids = slicing(3, false);
  SliceSummary s[3];
  SamplingParams greedy;
  for (int r = 0; r < 3; ++r) {
    s[r] = summarize_slice(logits.data() + ids[r].begin, ids[r], slice_list_length(greedy));
    CHECK_EQ(s[r].n_listed, 1);
  }
  // Rank order is lost if the slices come in any order: the merge sorts.
  std::swap(s[0], s[2]);
  CHECK_EQ(merge_slices(s, 3, greedy, 0).token.token, 10);
}

// A mask that allows nothing is an error, not a token.
TEST(a_mask_allowing_nothing_is_an_error) {
  SliceSummary empty[2];
  CHECK_THROWS_STATUS(merge_slices(empty, 2, SamplingParams{}, 0), GPTOSS_ERR_INVALID_ARGUMENT);
}

TEST_MAIN()
