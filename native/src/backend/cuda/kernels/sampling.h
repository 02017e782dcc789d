// GPU sampling of logits rows (sampling.cu): the Sampler's semantics on the
// device, so a decode step sends only SampledToken records to the host.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "model/tensor_parallel.h"
#include "runtime/sampler.h"
#include "runtime/sliced_sampling.h"

namespace gptoss::cuda {

// One row's parameters as the kernel reads them (plain data, uploaded per step).
struct DeviceSamplingRow {
  float temperature = 0.0f;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t top_k = 0;
  int32_t top_logprobs = -1;
  int32_t penalty_begin = 0;  // range of this row's (token, count) pairs
  int32_t penalty_end = 0;
  uint64_t seed = 0;
  uint64_t counter = 0;

  // `p` for the row's `counter`-th token, no penalty range yet.
  static DeviceSamplingRow of(const SamplingParams& p, uint64_t counter) {
    DeviceSamplingRow d;
    d.temperature = p.temperature;
    d.top_p = p.top_p;
    d.min_p = p.min_p;
    d.presence_penalty = p.presence_penalty;
    d.frequency_penalty = p.frequency_penalty;
    d.top_k = p.top_k;
    d.top_logprobs = p.top_logprobs;
    d.seed = p.seed;
    d.counter = counter;
    return d;
  }
};

// Constrained decoding: sets the logits of tokens a row's mask leaves out to
// -inf, before sample_rows. `masks` holds bitmasks of ceil(vocab / 32) words
// (bit id % 32 of word id / 32 set = allowed); row r uses mask mask_index[r],
// or none when it is -1.
void apply_token_masks(float* logits, int32_t n_rows, int32_t vocab, const uint32_t* masks,
                       const int32_t* mask_index, cudaStream_t stream);

// Samples each of `n_rows` rows of `logits` (float [n_rows, vocab]; penalties
// are applied in place). penalty_tokens/counts hold every row's generated
// tokens and their counts, rows[r] naming its range.
void sample_rows(float* logits, int32_t n_rows, int32_t vocab, const DeviceSamplingRow* rows,
                 const int32_t* penalty_tokens, const int32_t* penalty_counts, SampledToken* out,
                 cudaStream_t stream);

// ---- tensor parallel: sampling over the ranks' vocabulary slices (runtime/sliced_sampling.h)

// A rank's `slice` of each of n_rows rows (logits [n_rows, slice.size()])
// processed in place as process_logits does (the row's mask, mask_index and
// masks as for apply_token_masks, over whole-vocabulary ids; its penalties of
// tokens in the slice; its temperature) and reduced to out[r] as
// summarize_slice does, listing slice_list_length(row) candidates.
void summarize_slices(float* logits, int32_t n_rows, ShardRange slice, int32_t vocab, const DeviceSamplingRow* rows,
                      const int32_t* penalty_tokens, const int32_t* penalty_counts, const uint32_t* masks,
                      const int32_t* mask_index, SliceSummary* out, cudaStream_t stream);

// A walked draw (SliceMerge::Kind::Walk) in one row of a rank's processed slice.
struct SliceWalk {
  int32_t row = 0;
  float max = 0.0f;
  double target = 0.0;
};
struct SliceWalkResult {
  int32_t index = 0;  // into the slice
  float value = 0.0f;  // its processed logit
};

// walk_slice for each of `walks` over `logits` [rows, width] (processed by summarize_slices).
void walk_slices(const float* logits, int32_t width, const SliceWalk* walks, int32_t n_walks, SliceWalkResult* out,
                 cudaStream_t stream);

}  // namespace gptoss::cuda
