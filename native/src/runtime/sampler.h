// Sampler: picks the next token of a sequence from its logits row.
//
// The processed distribution, in order:
//   1. penalties over the tokens generated so far (OpenAI semantics):
//      logit -= frequency_penalty * count + presence_penalty * (count > 0);
//   2. divided by the temperature (1 when greedy);
//   3. restricted by min_p (keep p >= min_p * p_max), then top_k, then top_p
//      (the smallest highest-probability set reaching top_p);
//   4. softmax over what is left.
// Greedy (temperature 0) takes the argmax, lowest id on ties; otherwise the
// token is drawn from that distribution with the counter-based RNG keyed by
// (seed, tokens generated so far), walking the candidates in rank order when
// top_k or top_p cut them (a short list), in id order otherwise (the draw is
// then a function of the distribution alone, so tensor-parallel ranks can
// walk their vocabulary slices one after another: runtime/sliced_sampling.h). A constrained row's mask (`allowed`) comes
// before everything: tokens it leaves out get -inf logits, so they are never
// picked and have no probability. Log-probabilities, of the chosen token and
// of the top alternatives, are log-softmax of that same processed distribution:
// the probability the token actually had of being picked (with greedy, of the
// temperature-1 distribution after penalties and filters).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "gptoss.h"
#include "model/tensor_parallel.h"
#include "runtime/request.h"

namespace gptoss {

struct SampledToken {
  int32_t token = -1;
  float logprob = 0.0f;
  int32_t n_top = 0;
  int32_t top_ids[GPTOSS_MAX_TOP_LOGPROBS] = {};
  float top_logprobs[GPTOSS_MAX_TOP_LOGPROBS] = {};
};

// Steps 1 and 2 (and the mask) for the tokens `ids` of one row: out[i] is the
// processed logit of token ids.begin + i, from logits[i]. `allowed` and
// `generated_counts` use whole-vocabulary ids. The Sampler runs it over the
// whole row; a tensor-parallel rank over its vocabulary slice.
void process_logits(const float* logits, ShardRange ids, const SamplingParams& params,
                    const std::unordered_map<int32_t, int32_t>& generated_counts, const uint32_t* allowed,
                    float* out);

// Higher processed logit first, lower id on ties: a total order, so results
// never depend on the sort algorithm.
inline bool ranks_before(float a_value, int32_t a_id, float b_value, int32_t b_id) {
  return a_value > b_value || (a_value == b_value && a_id < b_id);
}

class Sampler {
 public:
  explicit Sampler(int32_t vocab_size) : vocab_size_(vocab_size) {}

  // `generated_counts`: occurrences of each generated token (for penalties);
  // `counter`: how many tokens the sequence generated before this one;
  // `allowed`: bitmask of the tokens it may pick (bit id % 32 of word id / 32),
  // null for all. The mask must allow at least one token.
  SampledToken sample(const float* logits, const SamplingParams& params,
                      const std::unordered_map<int32_t, int32_t>& generated_counts, uint64_t counter,
                      const uint32_t* allowed = nullptr);

 private:
  auto by_rank() const {
    return [this](int32_t a, int32_t b) { return ranks_before(scaled_[a], a, scaled_[b], b); };
  }
  int32_t argmax_all() const;
  int32_t argmax(const std::vector<int32_t>& ids) const;
  void restrict_candidates(const SamplingParams& params);
  void keep_nucleus(float top_p);
  // Fills weights_ with exp(logit - max) per candidate; returns log-sum-exp.
  double weigh_candidates();

  const int32_t vocab_size_;
  std::vector<float> scaled_;        // steps 1 and 2, per token id
  std::vector<int32_t> candidates_;  // token ids that survive step 3
  std::vector<float> weights_;       // unnormalised probability per candidate
  double weight_sum_ = 0.0;
};

}  // namespace gptoss
