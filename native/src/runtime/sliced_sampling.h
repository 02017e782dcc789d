// Sampling a logits row split by vocabulary over tensor-parallel ranks,
// without gathering it: each rank reduces its slice to a SliceSummary (its
// max, sum of exponentials and first candidates in rank order), the summaries
// cross, and merge_slices picks the token the whole-row Sampler would pick
// (runtime/sampler.h) from them alone whenever the row's candidates are
// provably among the listed ones:
//   - greedy: the argmax (lowest id on ties), always;
//   - top_k up to kSliceCandidates: the global top_k is in the union of every
//     slice's top_k, so min_p, top_k, top_p and the draw are exact;
//   - top_p or min_p alone: when the nucleus (or the min_p floor) ends above
//     every truncated slice's last listed value;
//   - plain sampling (no top_k, top_p, min_p): a draw over every token in id
//     order, which the slices walk one after another - the merge names the
//     slice the draw lands in and what is left of it (Kind::Walk), that rank
//     walks its slice (walk_slice).
// Anything else (a nucleus or min_p floor reaching past the lists, top_k
// above kSliceCandidates) is Kind::WholeRow: the caller samples the whole row.
// Results equal the whole-row Sampler's bit for bit, except that a walked
// draw sums the slices' exponentials in another order: a draw within float32
// rounding of a token boundary may land on its neighbour.
//
// Plain data throughout (no pointers), so a device backend can produce the
// summaries in a kernel and run the merge on the device.
#pragma once

#include <cmath>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "model/tensor_parallel.h"
#include "runtime/request.h"
#include "runtime/sampler.h"

namespace gptoss {

// Candidates a slice lists at most: enough for any top_k up to it and for
// every top log-probability (GPTOSS_MAX_TOP_LOGPROBS).
constexpr int32_t kSliceCandidates = 64;
static_assert(kSliceCandidates >= GPTOSS_MAX_TOP_LOGPROBS, "top log-probabilities come from the lists");

// One rank's reduction of its slice of one row's processed logits
// (process_logits: mask, penalties, temperature).
struct SliceSummary {
  float max = -INFINITY;  // the slice's highest processed logit; -inf when the mask left none
  double sum_exp = 0.0;   // sum over its unmasked tokens of exp(s - max), float terms as the Sampler's
  int32_t n_valid = 0;    // its unmasked tokens
  int32_t n_listed = 0;   // min(n_valid, slice_list_length(params))
  int32_t ids[kSliceCandidates] = {};     // whole-vocabulary ids, in rank order
  float values[kSliceCandidates] = {};
};

// How many candidates a slice lists for a row of `params`: one for greedy
// without log-probabilities, kSliceCandidates otherwise.
int32_t slice_list_length(const SamplingParams& params);

// A rank's summary of its processed slice `s` of token ids `ids`.
SliceSummary summarize_slice(const float* s, ShardRange ids, int32_t list_length);

struct SliceMerge {
  enum class Kind : uint8_t {
    Token,     // `token` is complete
    Walk,      // slice `walk_slice` draws: walk_slice(its s, ..., max, target)
    WholeRow,  // the candidates reach past the lists: sample the whole row
  };
  Kind kind = Kind::Token;
  // Token: the result. Walk: everything but token and logprob, which the
  // walking slice's value fills in (finish_walk).
  SampledToken token;
  int32_t walk_slice = 0;
  float max = -INFINITY;  // the row's max processed logit, the walk's weights' reference
  double target = 0.0;    // the draw's mass still to pass inside the walking slice
  double log_sum_exp = 0.0;
};

// Merges the ranks' summaries of one row, in rank order (slices ascending in
// id). `counter` as for Sampler::sample. Error(INVALID_ARGUMENT) when every
// token is masked out.
SliceMerge merge_slices(const SliceSummary* slices, int32_t n_slices, const SamplingParams& params,
                        uint64_t counter);

// The walked draw inside one slice: the first unmasked token in id order at
// which sum(exp(s - max)) passes `target` (the last unmasked one if rounding
// leaves the sum short). Returns its index into `s`.
int32_t walk_slice(const float* s, int32_t n, float max, double target);

// Completes a Walk's token with the walked token and its processed logit.
void finish_walk(SliceMerge& merge, int32_t token, float value);

// All of it for ranks in one process (the CPU backend at TP > 1): each rank's
// slice processed and summarized, the merge, the walk or the whole-row
// fallback.
class SlicedSampler {
 public:
  explicit SlicedSampler(int32_t vocab_size) : whole_row_sampler_(vocab_size), row_(vocab_size) {}

  // `logits[r]`: the row's logits for token ids `ids[r]` (ascending,
  // covering the vocabulary). Arguments otherwise as Sampler::sample.
  SampledToken sample(const std::vector<const float*>& logits, const std::vector<ShardRange>& ids,
                      const SamplingParams& params, const std::unordered_map<int32_t, int32_t>& generated_counts,
                      uint64_t counter, const uint32_t* allowed = nullptr);

  // Rows sampled so far by each way (the tests check that each ran).
  int64_t walked() const { return walked_; }
  int64_t whole_rows() const { return whole_rows_; }

 private:
  Sampler whole_row_sampler_;
  std::vector<float> row_;
  std::vector<std::vector<float>> processed_;
  std::vector<SliceSummary> summaries_;
  int64_t walked_ = 0;
  int64_t whole_rows_ = 0;
};

}  // namespace gptoss
