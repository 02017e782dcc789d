#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

#include "runtime/counter_rng.h"

namespace gptoss {

SampledToken Sampler::sample(const float* logits, const SamplingParams& params,
                             const std::unordered_map<int32_t, int32_t>& generated_counts, uint64_t counter,
                             const uint32_t* allowed) {
  scaled_.resize(vocab_size_);
  process_logits(logits, ShardRange{0, vocab_size_}, params, generated_counts, allowed, scaled_.data());
  const bool greedy = params.temperature == 0.0f;
  SampledToken out;
  if (greedy && params.top_logprobs < 0) {
    // The filters never remove the most likely token, and nothing else is asked for.
    out.token = argmax_all();
    return out;
  }

  restrict_candidates(params);
  const double lse = weigh_candidates();
  if (greedy) {
    out.token = argmax(candidates_);
  } else {
    const double target = uniform01(params.seed, counter) * weight_sum_;
    double cumulative = 0.0;
    size_t pick = candidates_.size() - 1;  // rounding can leave the sum a hair under target
    for (size_t i = 0; i < candidates_.size(); ++i) {
      cumulative += weights_[i];
      if (target < cumulative) {
        pick = i;
        break;
      }
    }
    out.token = candidates_[pick];
  }

  out.logprob = static_cast<float>(scaled_[out.token] - lse);
  if (params.top_logprobs > 0) {
    out.n_top = std::min<int32_t>(params.top_logprobs, static_cast<int32_t>(candidates_.size()));
    std::partial_sort(candidates_.begin(), candidates_.begin() + out.n_top, candidates_.end(), by_rank());
    for (int32_t i = 0; i < out.n_top; ++i) {
      out.top_ids[i] = candidates_[i];
      out.top_logprobs[i] = static_cast<float>(scaled_[candidates_[i]] - lse);
    }
  }
  return out;
}

void process_logits(const float* logits, ShardRange ids, const SamplingParams& params,
                    const std::unordered_map<int32_t, int32_t>& generated_counts, const uint32_t* allowed,
                    float* out) {
  std::copy(logits, logits + ids.size(), out);
  if (allowed != nullptr) {
    for (int32_t id = ids.begin; id < ids.end; ++id) {
      if (((allowed[id >> 5] >> (id & 31)) & 1u) == 0) out[id - ids.begin] = -INFINITY;
    }
  }
  for (const auto& [token, count] : generated_counts) {
    if (ids.contains(token))
      out[token - ids.begin] -= params.frequency_penalty * static_cast<float>(count) + params.presence_penalty;
  }
  if (params.temperature > 0.0f && params.temperature != 1.0f) {
    const float inv_t = 1.0f / params.temperature;
    for (int32_t i = 0; i < ids.size(); ++i) out[i] *= inv_t;
  }
}

int32_t Sampler::argmax_all() const {
  int32_t best = 0;  // strict > keeps the lowest id on ties
  for (int32_t id = 1; id < vocab_size_; ++id) {
    if (scaled_[id] > scaled_[best]) best = id;
  }
  return best;
}

int32_t Sampler::argmax(const std::vector<int32_t>& ids) const {
  return *std::min_element(ids.begin(), ids.end(), by_rank());
}

void Sampler::restrict_candidates(const SamplingParams& params) {
  const float max_logit = scaled_[argmax_all()];
  // p >= min_p * p_max  <=>  logit >= max_logit + log(min_p).
  const float floor = params.min_p > 0.0f ? max_logit + std::log(params.min_p) : -INFINITY;
  candidates_.clear();
  for (int32_t id = 0; id < vocab_size_; ++id) {
    // > -inf: a token masked out by a constraint is never a candidate, even without min_p.
    if (scaled_[id] >= floor && scaled_[id] > -INFINITY) candidates_.push_back(id);
  }
  if (params.top_k > 0 && params.top_k < static_cast<int32_t>(candidates_.size())) {
    // The draw walks a cut list in rank order (sampler.h).
    std::partial_sort(candidates_.begin(), candidates_.begin() + params.top_k, candidates_.end(), by_rank());
    candidates_.resize(params.top_k);
  }
  if (params.top_p < 1.0f) keep_nucleus(params.top_p);
}

// Keeps the smallest highest-ranked prefix whose probability reaches top_p.
// The nucleus is usually a tiny part of a 200k vocabulary, so the ranking is
// sorted only as far as needed: the first k, then 4k, ... until it is reached.
void Sampler::keep_nucleus(float top_p) {
  const double lse = weigh_candidates();
  const size_t n = candidates_.size();
  size_t sorted = std::min<size_t>(n, 64);
  for (;;) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + sorted, candidates_.end(), by_rank());
    double cumulative = 0.0;
    for (size_t i = 0; i < sorted; ++i) {
      cumulative += std::exp(static_cast<double>(scaled_[candidates_[i]]) - lse);
      if (cumulative >= top_p) {
        candidates_.resize(i + 1);
        return;
      }
    }
    if (sorted == n) return;  // rounding: everything is in
    sorted = std::min(n, sorted * 4);
  }
}

double Sampler::weigh_candidates() {
  float max_logit = -INFINITY;
  for (int32_t id : candidates_) max_logit = std::max(max_logit, scaled_[id]);
  weights_.resize(candidates_.size());
  double sum = 0.0;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    weights_[i] = std::exp(scaled_[candidates_[i]] - max_logit);
    sum += weights_[i];
  }
  weight_sum_ = sum;
  return max_logit + std::log(sum);
}

}  // namespace gptoss
