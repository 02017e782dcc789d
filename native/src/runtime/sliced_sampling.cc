#include "runtime/sliced_sampling.h"

#include <algorithm>
#include <vector>

#include "common/error.h"
#include "runtime/counter_rng.h"

namespace gptoss {

namespace {

struct Candidate {
  float value;
  int32_t id;
};

bool by_rank(const Candidate& a, const Candidate& b) { return ranks_before(a.value, a.id, b.value, b.id); }

// The Sampler's weigh_candidates: float weights exp(s - max), summed in
// double in the given order; returns the log-sum-exp.
double weigh(const std::vector<Candidate>& c, float max, std::vector<float>& weights, double& sum) {
  weights.resize(c.size());
  sum = 0.0;
  for (size_t i = 0; i < c.size(); ++i) {
    weights[i] = std::exp(c[i].value - max);
    sum += weights[i];
  }
  return max + std::log(sum);
}

void fill_top_logprobs(const std::vector<Candidate>& rank_ordered, int32_t n_candidates, double lse,
                       const SamplingParams& params, SampledToken& out) {
  if (params.top_logprobs <= 0) return;
  out.n_top = std::min(params.top_logprobs, n_candidates);
  for (int32_t i = 0; i < out.n_top; ++i) {
    out.top_ids[i] = rank_ordered[i].id;
    out.top_logprobs[i] = static_cast<float>(rank_ordered[i].value - lse);
  }
}

// The Sampler's draw and log-probabilities over a known candidate list:
// `walk` in the order the Sampler walks it, `rank_ordered` the same set by rank.
SampledToken draw(const std::vector<Candidate>& walk, const std::vector<Candidate>& rank_ordered,
                  const SamplingParams& params, uint64_t counter) {
  std::vector<float> weights;
  double sum = 0.0;
  const double lse = weigh(walk, rank_ordered[0].value, weights, sum);
  SampledToken out;
  Candidate pick = rank_ordered[0];
  if (params.temperature != 0.0f) {
    const double target = uniform01(params.seed, counter) * sum;
    double cumulative = 0.0;
    pick = walk.back();  // rounding can leave the sum a hair under target
    for (size_t i = 0; i < walk.size(); ++i) {
      cumulative += weights[i];
      if (target < cumulative) {
        pick = walk[i];
        break;
      }
    }
  }
  out.token = pick.id;
  out.logprob = static_cast<float>(pick.value - lse);
  fill_top_logprobs(rank_ordered, static_cast<int32_t>(rank_ordered.size()), lse, params, out);
  return out;
}

// A slice's sum of exp(s - max) for the row's max.
double slice_mass(const SliceSummary& s, float max) {
  return s.n_valid == 0 ? 0.0 : s.sum_exp * std::exp(static_cast<double>(s.max) - max);
}

std::vector<Candidate> by_id(std::vector<Candidate> c) {
  std::sort(c.begin(), c.end(), [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
  return c;
}

}  // namespace

int32_t slice_list_length(const SamplingParams& params) {
  return params.temperature == 0.0f && params.top_logprobs < 0 ? 1 : kSliceCandidates;
}

SliceSummary summarize_slice(const float* s, ShardRange ids, int32_t list_length) {
  SliceSummary out;
  std::vector<Candidate> valid;
  for (int32_t i = 0; i < ids.size(); ++i) {
    if (s[i] > -INFINITY) valid.push_back({s[i], ids.begin + i});
  }
  out.n_valid = static_cast<int32_t>(valid.size());
  out.n_listed = std::min({out.n_valid, list_length, kSliceCandidates});
  std::partial_sort(valid.begin(), valid.begin() + out.n_listed, valid.end(), by_rank);
  for (int32_t i = 0; i < out.n_listed; ++i) out.ids[i] = valid[i].id, out.values[i] = valid[i].value;
  if (out.n_valid == 0) return out;
  out.max = valid[0].value;
  for (int32_t i = 0; i < ids.size(); ++i) {
    if (s[i] > -INFINITY) out.sum_exp += std::exp(s[i] - out.max);
  }
  return out;
}

SliceMerge merge_slices(const SliceSummary* slices, int32_t n_slices, const SamplingParams& params,
                        uint64_t counter) {
  std::vector<Candidate> merged;
  // Every token ranked after `bound` may be missing from the lists; those
  // ranked before it are all listed (a slice lists a prefix of its order).
  float bound = -INFINITY;
  int64_t n_valid = 0;
  for (int32_t r = 0; r < n_slices; ++r) {
    const SliceSummary& s = slices[r];
    for (int32_t i = 0; i < s.n_listed; ++i) merged.push_back({s.values[i], s.ids[i]});
    if (s.n_listed < s.n_valid) bound = std::max(bound, s.values[s.n_listed - 1]);
    n_valid += s.n_valid;
  }
  if (merged.empty()) throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "sampling: the token mask allows no token");
  std::sort(merged.begin(), merged.end(), by_rank);
  const bool truncated = bound > -INFINITY;
  const float max = merged[0].value;
  SliceMerge out;
  out.max = max;
  if (params.temperature == 0.0f && params.top_logprobs < 0) {
    out.token.token = merged[0].id;
    return out;
  }

  // Step 3 of the Sampler. min_p keeps a rank-order prefix: every token at or
  // above the floor is listed when the floor is above the bound.
  const float floor = params.min_p > 0.0f ? max + std::log(params.min_p) : -INFINITY;
  const bool floor_listed = !truncated || floor > bound;
  std::vector<Candidate> kept;
  for (const Candidate& c : merged) {
    if (c.value >= floor) kept.push_back(c);
  }
  // top_k cuts when fewer than the floor keeps; the global top_k is in the
  // union of the slices' top_k, so a cut up to the list length is exact.
  const int32_t list = slice_list_length(params);
  bool known = floor_listed;
  bool rank_order = false;
  if (params.top_k > 0) {
    if (floor_listed ? params.top_k < static_cast<int32_t>(kept.size()) : params.top_k < list) {
      kept.resize(params.top_k);
      known = rank_order = true;
    } else if (!floor_listed) {
      out.kind = SliceMerge::Kind::WholeRow;  // whether top_k cuts is unknown
      return out;
    }
  }

  // Unlisted candidates and no cut: only a min_p-free row has a known total.
  // The mass of every candidate relative to exp(max), and its log-sum-exp.
  double total = 0.0;
  double total_lse = 0.0;
  if (!known) {
    if (params.min_p > 0.0f) {
      out.kind = SliceMerge::Kind::WholeRow;
      return out;
    }
    for (int32_t r = 0; r < n_slices; ++r) total += slice_mass(slices[r], max);
    total_lse = max + std::log(total);
  } else {
    std::vector<float> weights;
    total_lse = weigh(rank_order ? kept : by_id(kept), max, weights, total);
  }

  if (params.top_p < 1.0f) {
    // The smallest rank-order prefix reaching top_p, found among the tokens
    // known to be listed in order (all of kept when known, else those above the bound).
    double cumulative = 0.0;
    size_t end = 0;
    for (; end < kept.size(); ++end) {
      if (!known && !(kept[end].value > bound)) break;
      cumulative += std::exp(static_cast<double>(kept[end].value) - total_lse);
      if (cumulative >= params.top_p) break;
    }
    if (end < kept.size() && (known || kept[end].value > bound)) {
      kept.resize(end + 1);
    } else if (!known) {
      out.kind = SliceMerge::Kind::WholeRow;
      return out;
    }  // else rounding: every candidate is in
    out.token = draw(kept, kept, params, counter);
    return out;
  }
  if (known) {
    out.token = draw(rank_order ? kept : by_id(kept), kept, params, counter);
    return out;
  }

  // Every unmasked token, drawn in id order: slice by slice.
  out.log_sum_exp = total_lse;
  fill_top_logprobs(merged, static_cast<int32_t>(std::min<int64_t>(n_valid, merged.size())), total_lse, params,
                    out.token);
  if (params.temperature == 0.0f) {
    out.token.token = merged[0].id;
    out.token.logprob = static_cast<float>(max - total_lse);
    return out;
  }
  double target = uniform01(params.seed, counter) * total;
  out.kind = SliceMerge::Kind::Walk;
  for (int32_t r = 0; r < n_slices; ++r) {
    if (slices[r].n_valid == 0) continue;
    const double mass = slice_mass(slices[r], max);
    out.walk_slice = r;
    out.target = target;
    if (target < mass) break;
    target -= mass;
  }
  return out;
}

int32_t walk_slice(const float* s, int32_t n, float max, double target) {
  double cumulative = 0.0;
  int32_t last = -1;
  for (int32_t i = 0; i < n; ++i) {
    if (!(s[i] > -INFINITY)) continue;
    last = i;
    cumulative += std::exp(s[i] - max);
    if (target < cumulative) return i;
  }
  return last;
}

void finish_walk(SliceMerge& merge, int32_t token, float value) {
  merge.token.token = token;
  merge.token.logprob = static_cast<float>(value - merge.log_sum_exp);
  merge.kind = SliceMerge::Kind::Token;
}

SampledToken SlicedSampler::sample(const std::vector<const float*>& logits, const std::vector<ShardRange>& ids,
                                   const SamplingParams& params,
                                   const std::unordered_map<int32_t, int32_t>& generated_counts, uint64_t counter,
                                   const uint32_t* allowed) {
  const int32_t n = static_cast<int32_t>(ids.size());
  processed_.resize(n);
  summaries_.resize(n);
  for (int32_t r = 0; r < n; ++r) {
    processed_[r].resize(ids[r].size());
    process_logits(logits[r], ids[r], params, generated_counts, allowed, processed_[r].data());
    summaries_[r] = summarize_slice(processed_[r].data(), ids[r], slice_list_length(params));
  }
  SliceMerge merge = merge_slices(summaries_.data(), n, params, counter);
  if (merge.kind == SliceMerge::Kind::Walk) {
    ++walked_;
    const int32_t r = merge.walk_slice;
    const int32_t i = walk_slice(processed_[r].data(), ids[r].size(), merge.max, merge.target);
    finish_walk(merge, ids[r].begin + i, processed_[r][i]);
  } else if (merge.kind == SliceMerge::Kind::WholeRow) {
    ++whole_rows_;
    for (int32_t r = 0; r < n; ++r) std::copy(logits[r], logits[r] + ids[r].size(), row_.begin() + ids[r].begin);
    return whole_row_sampler_.sample(row_.data(), params, generated_counts, counter, allowed);
  }
  return merge.token;
}

}  // namespace gptoss
