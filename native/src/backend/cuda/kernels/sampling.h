// GPU sampling of logits rows (sampling.cu): the Sampler's semantics on the
// device, so a decode step sends only SampledToken records to the host.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/sampler.h"

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

}  // namespace gptoss::cuda
