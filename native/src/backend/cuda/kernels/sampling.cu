// Sampling on the GPU, one block per logits row, with the Sampler's semantics
// (runtime/sampler.h): penalties, temperature, min_p, top_k, top_p, then a
// draw with the counter-based RNG, log-probabilities of the processed
// distribution. Only SampledToken records leave the device.
//
// The candidate set is always a prefix of the rank order (higher logit first,
// lower id on ties), so it is held as a cut: token i is kept when
// s_i > cut_value, or s_i == cut_value and i <= cut_id. top_k and top_p move
// the cut by a bitwise binary search over the float order (32 counting
// passes), then resolve ties at the cut by id. The draw walks the kept
// tokens as the Sampler does: in rank order when top_k or top_p cut them (the
// same search for the token where the mass passes the draw), else in id order.
#include <cfloat>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/device_math.cuh"
#include "backend/cuda/kernels/sampling.h"
#include "runtime/counter_rng.h"

namespace gptoss::cuda {
namespace {

constexpr int kThreads = 1024;

// Monotone map of floats to unsigned ints (larger float, larger key).
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}
__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? k & 0x7fffffffu : ~k);
}

struct Row {
  const float* logits;
  int32_t vocab;
  float inv_t;  // 1 when the logits are not scaled
  float cut_value;
  int32_t cut_id;

  __device__ float s(int32_t i) const { return inv_t == 1.0f ? logits[i] : logits[i] * inv_t; }
  // -inf is a token a constraint masked out: never kept, as in the Sampler.
  __device__ bool kept(int32_t i, float v) const {
    return v > -INFINITY && (v > cut_value || (v == cut_value && i <= cut_id));
  }
};

struct Shared {
  float f[32];
  double d[32];
  int32_t i[32];
};

__device__ double block_sum_d(double v, Shared& sh) {
  return block_reduce(v, sh.d, 0.0, [](double a, double b) { return a + b; });
}
__device__ int32_t block_sum_i(int32_t v, Shared& sh) {
  return block_reduce(v, sh.i, 0, [](int32_t a, int32_t b) { return a + b; });
}
__device__ int32_t block_max_i(int32_t v, Shared& sh) {
  return block_reduce(v, sh.i, INT32_MIN, [](int32_t a, int32_t b) { return max(a, b); });
}

// The first token in rank order among those ranked strictly after
// (after_value, after_id) and accepted by `filter`; -1 when none.
template <typename Filter>
__device__ int32_t block_top(const Row& row, float after_value, int32_t after_id, Filter filter,
                             Shared& sh, float* value_out) {
  float best = -INFINITY;
  int32_t best_id = -1;
  // A greedy decode row is nothing but this scan (~200 logits a thread over
  // a 201k vocabulary): unrolled so several loads are in flight, not one.
#pragma unroll 8
  for (int32_t i = threadIdx.x; i < row.vocab; i += kThreads) {
    const float v = row.s(i);
    const bool after = v < after_value || (v == after_value && i > after_id);
    if (after && filter(i, v) && (best_id < 0 || v > best)) best = v, best_id = i;
  }
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  auto better = [](float v, int32_t id, float bv, int32_t bid) {
    return id >= 0 && (bid < 0 || v > bv || (v == bv && id < bid));
  };
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int32_t oid = __shfl_xor_sync(0xffffffffu, best_id, o);
    if (better(ov, oid, best, best_id)) best = ov, best_id = oid;
  }
  __syncthreads();
  if (lane == 0) sh.f[warp] = best, sh.i[warp] = best_id;
  __syncthreads();
  best = lane < kThreads / kWarpSize ? sh.f[lane] : -INFINITY;
  best_id = lane < kThreads / kWarpSize ? sh.i[lane] : -1;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int32_t oid = __shfl_xor_sync(0xffffffffu, best_id, o);
    if (better(ov, oid, best, best_id)) best = ov, best_id = oid;
  }
  *value_out = best;
  return best_id;
}

// Largest key K with measure(K) >= target, where measure(K) sums weight(i, v)
// over kept tokens with order_key(v) >= K (non-increasing in K).
template <typename Weight>
__device__ uint32_t search_cut(const Row& row, double target, Weight weight, Shared& sh) {
  uint32_t key = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t candidate = key | (1u << bit);
    double sum = 0.0;
    for (int32_t i = threadIdx.x; i < row.vocab; i += kThreads) {
      const float v = row.s(i);
      if (order_key(v) >= candidate && row.kept(i, v)) sum += weight(v);
    }
    if (block_sum_d(sum, sh) >= target) key = candidate;
  }
  return key;
}

// This thread's contiguous range [lo, hi) of n tokens: scans that must keep
// id order give each thread one range and combine the threads in order.
struct ThreadRange {
  int32_t lo, hi;
};
__device__ ThreadRange thread_range(int32_t n) {
  const int32_t per = (n + kThreads - 1) / kThreads;
  const int32_t lo = threadIdx.x * per;
  return ThreadRange{lo, min(n, lo + per)};
}

// The id of the n-th (1-based) kept token with value exactly `value`, in id
// order: per-thread contiguous ranges and a block scan of their counts.
__device__ int32_t nth_tie(const Row& row, float value, int32_t n, Shared& sh) {
  __shared__ int32_t counts[kThreads];
  __shared__ int32_t found;
  const auto [lo, hi] = thread_range(row.vocab);
  int32_t c = 0;
  for (int32_t i = lo; i < hi; ++i) {
    const float v = row.s(i);
    c += v == value && row.kept(i, v);
  }
  counts[threadIdx.x] = c;
  if (threadIdx.x == 0) found = row.vocab - 1;
  __syncthreads();
  int32_t before = 0;
  for (int t = 0; t < static_cast<int>(threadIdx.x); ++t) before += counts[t];
  if (before < n && before + c >= n) {
    int32_t seen = before;
    for (int32_t i = lo; i < hi; ++i) {
      const float v = row.s(i);
      if (v == value && row.kept(i, v) && ++seen == n) {
        found = i;
        break;
      }
    }
  }
  __syncthreads();
  return found;
}

// Moves the cut to keep exactly the first `n` kept tokens in rank order.
__device__ void cut_to_count(Row& row, int32_t n, Shared& sh) {
  const uint32_t key = search_cut(row, n, [](float) { return 1.0; }, sh);
  const float value = key_value(key);
  int32_t above = 0;
  for (int32_t i = threadIdx.x; i < row.vocab; i += kThreads) {
    const float v = row.s(i);
    above += v > value && row.kept(i, v);
  }
  above = block_sum_i(above, sh);
  row.cut_id = nth_tie(row, value, n - above, sh);
  row.cut_value = value;
}

// The id-order draw: the first kept token at which the running sum of
// weight(s) passes `target`, per-thread contiguous ranges and a scan of
// their sums; the last kept token when rounding leaves the total short.
template <typename Weight>
__device__ int32_t walk_id_order(const Row& row, double target, Weight weight, Shared& sh) {
  __shared__ double sums[kThreads];
  __shared__ int32_t drawn;
  const auto [lo, hi] = thread_range(row.vocab);
  double mine = 0.0;
  int32_t last = -1;
  for (int32_t i = lo; i < hi; ++i) {
    const float v = row.s(i);
    if (row.kept(i, v)) mine += weight(v), last = i;
  }
  sums[threadIdx.x] = mine;
  const int32_t last_kept = block_max_i(last, sh);
  if (threadIdx.x == 0) drawn = last_kept;
  __syncthreads();
  double before = 0.0;
  for (int t = 0; t < static_cast<int>(threadIdx.x); ++t) before += sums[t];
  __syncthreads();
  if (before <= target && target < before + mine) {
    double cumulative = before;
    for (int32_t i = lo; i < hi; ++i) {
      const float v = row.s(i);
      if (!row.kept(i, v)) continue;
      cumulative += weight(v);
      if (target < cumulative) {
        drawn = i;
        break;
      }
    }
  }
  __syncthreads();
  return drawn;
}

// The first kept token in rank order at which the running sum of
// exp(v - lse) reaches `target` (strict: passes it): a binary search for its
// value, then its place among the tokens of that value in id order. id -1
// when the kept mass never gets there (rounding).
struct Cut {
  float value;
  int32_t id;
};
__device__ Cut first_reaching(const Row& row, double target, double lse, bool strict, Shared& sh) {
  const uint32_t key = search_cut(row, target, [lse](float v) { return exp(v - lse); }, sh);
  const float value = key_value(key);
  double above = 0.0;
  int32_t ties = 0;
  for (int32_t i = threadIdx.x; i < row.vocab; i += kThreads) {
    const float v = row.s(i);
    if (!row.kept(i, v)) continue;
    if (v > value) above += exp(static_cast<double>(v) - lse);
    ties += v == value;
  }
  above = block_sum_d(above, sh);
  ties = block_sum_i(ties, sh);
  if (ties == 0) return Cut{value, -1};
  const double q = exp(static_cast<double>(value) - lse);
  const double n = strict ? floor((target - above) / q) + 1.0 : ceil((target - above) / q);
  const int32_t need = max(1, min(ties, static_cast<int32_t>(fmin(n, 2147483647.0))));
  return Cut{value, nth_tie(row, value, need, sh)};
}

// The draw over a short kept list (n <= kThreads tokens) in rank order, as
// the Sampler walks it: the tokens gathered into shared memory, each placed
// by counting those ranked before it, then one thread walks float weights
// exp(s - max) summed in double.
__device__ int32_t walk_short_list(const Row& row, double u, int32_t n) {
  __shared__ float values[kThreads];
  __shared__ int32_t ids[kThreads];
  __shared__ int32_t count;
  __shared__ int32_t drawn;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  for (int32_t i = threadIdx.x; i < row.vocab; i += kThreads) {
    const float v = row.s(i);
    if (!row.kept(i, v)) continue;
    const int32_t at = atomicAdd(&count, 1);
    if (at < kThreads) values[at] = v, ids[at] = i;
  }
  __syncthreads();
  float mine = 0.0f;
  int32_t my_id = -1, place = 0;
  if (static_cast<int32_t>(threadIdx.x) < n) {
    mine = values[threadIdx.x], my_id = ids[threadIdx.x];
    for (int32_t j = 0; j < n; ++j) place += values[j] > mine || (values[j] == mine && ids[j] < my_id);
  }
  __syncthreads();
  if (static_cast<int32_t>(threadIdx.x) < n) values[place] = mine, ids[place] = my_id;
  __syncthreads();
  if (threadIdx.x == 0) {
    double sum = 0.0;
    for (int32_t j = 0; j < n; ++j) sum += expf(values[j] - values[0]);
    const double target = u * sum;
    double cumulative = 0.0;
    drawn = ids[n - 1];  // rounding can leave the sum a hair under target
    for (int32_t j = 0; j < n; ++j) {
      cumulative += expf(values[j] - values[0]);
      if (target < cumulative) {
        drawn = ids[j];
        break;
      }
    }
  }
  __syncthreads();
  return drawn;
}

__device__ double kept_log_sum_exp(const Row& row, float max_value, Shared& sh) {
  double sum = 0.0;
  for (int32_t i = threadIdx.x; i < row.vocab; i += kThreads) {
    const float v = row.s(i);
    if (row.kept(i, v)) sum += exp(static_cast<double>(v) - max_value);
  }
  return max_value + log(block_sum_d(sum, sh));
}

__global__ void __launch_bounds__(kThreads)
    sample_rows_kernel(float* logits, int32_t vocab, const DeviceSamplingRow* rows,
                       const int32_t* penalty_tokens, const int32_t* penalty_counts,
                       SampledToken* out) {
  __shared__ Shared sh;
  const DeviceSamplingRow p = rows[blockIdx.x];
  float* lg = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  for (int32_t j = p.penalty_begin + threadIdx.x; j < p.penalty_end; j += kThreads)
    lg[penalty_tokens[j]] -=
        p.frequency_penalty * static_cast<float>(penalty_counts[j]) + p.presence_penalty;
  __syncthreads();

  const bool greedy = p.temperature == 0.0f;
  Row row{lg, vocab, greedy || p.temperature == 1.0f ? 1.0f : 1.0f / p.temperature, -INFINITY,
          INT32_MAX};
  float max_value;
  const int32_t argmax =
      block_top(row, INFINITY, -1, [](int32_t, float) { return true; }, sh, &max_value);
  SampledToken& result = out[blockIdx.x];
  if (greedy && p.top_logprobs < 0) {  // no distribution needed
    if (threadIdx.x == 0) result.token = argmax, result.logprob = 0.0f, result.n_top = 0;
    return;
  }

  // min_p: p >= min_p * p_max  <=>  s >= max + log(min_p); ties all stay.
  if (p.min_p > 0.0f) row.cut_value = max_value + logf(p.min_p);
  int32_t n_kept = 0;
  for (int32_t i = threadIdx.x; i < vocab; i += kThreads) n_kept += row.kept(i, row.s(i));
  n_kept = block_sum_i(n_kept, sh);
  const bool cut_by_k = p.top_k > 0 && p.top_k < n_kept;
  if (cut_by_k) {
    cut_to_count(row, p.top_k, sh);
    n_kept = p.top_k;
  }
  // A list cut by top_k or top_p is drawn from in rank order, as the Sampler does.
  const bool rank_order = cut_by_k || p.top_p < 1.0f;
  if (p.top_p < 1.0f) {
    // The Sampler keeps tokens in rank order while the mass before them is
    // under top_p: the prefix ends at the first token where it reaches top_p.
    const Cut cut = first_reaching(row, p.top_p, kept_log_sum_exp(row, max_value, sh), false, sh);
    if (cut.id >= 0) {  // else the mass never reached top_p (rounding): keep all
      row.cut_value = cut.value;
      row.cut_id = cut.id;
      int32_t kept = 0;
      for (int32_t i = threadIdx.x; i < vocab; i += kThreads) kept += row.kept(i, row.s(i));
      n_kept = block_sum_i(kept, sh);
    }
  }

  const double lse = kept_log_sum_exp(row, max_value, sh);
  const auto probability = [lse](float v) { return exp(static_cast<double>(v) - lse); };
  int32_t token = argmax;
  if (!greedy && rank_order && n_kept <= kThreads) {
    token = walk_short_list(row, uniform01(p.seed, p.counter), n_kept);
  } else if (!greedy && rank_order) {
    // The first kept token in rank order at which the cumulative probability
    // passes u (of the kept mass, about 1); rounding short of it: the last kept.
    double total = 0.0;
    for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float v = row.s(i);
      if (row.kept(i, v)) total += probability(v);
    }
    total = block_sum_d(total, sh);
    const Cut drawn = first_reaching(row, uniform01(p.seed, p.counter) * total, lse, true, sh);
    token = drawn.id >= 0 ? drawn.id : row.cut_id != INT32_MAX ? row.cut_id : argmax;
  } else if (!greedy) {
    // Walk kept tokens in id order until the cumulative probability passes u.
    token = walk_id_order(row, uniform01(p.seed, p.counter), probability, sh);
  }
  if (threadIdx.x == 0) {
    result.token = token;
    result.logprob = static_cast<float>(row.s(token) - lse);
  }
  const int32_t n_top = min(max(p.top_logprobs, 0), n_kept);
  float prev_value = INFINITY;
  int32_t prev_id = -1;
  for (int32_t j = 0; j < n_top; ++j) {
    prev_id = block_top(row, prev_value, prev_id,
                        [&row](int32_t i, float v) { return row.kept(i, v); }, sh, &prev_value);
    if (threadIdx.x == 0) {
      result.top_ids[j] = prev_id;
      result.top_logprobs[j] = static_cast<float>(prev_value - lse);
    }
  }
  if (threadIdx.x == 0) result.n_top = n_top;
}

// One block per row: the rank's slice [begin, begin + width) of the row
// processed in place (process_logits: mask, penalties, temperature), then
// summarized (summarize_slice).
__global__ void __launch_bounds__(kThreads)
    summarize_slices_kernel(float* logits, int32_t width, int32_t begin, int32_t vocab,
                            const DeviceSamplingRow* rows, const int32_t* penalty_tokens,
                            const int32_t* penalty_counts, const uint32_t* masks, const int32_t* mask_index,
                            SliceSummary* out) {
  __shared__ Shared sh;
  __shared__ int32_t n_collected;
  __shared__ int32_t listed_ids[kSliceCandidates];
  __shared__ float listed_values[kSliceCandidates];
  const DeviceSamplingRow p = rows[blockIdx.x];
  float* lg = logits + static_cast<int64_t>(blockIdx.x) * width;
  const int32_t m = mask_index ? mask_index[blockIdx.x] : -1;
  if (m >= 0) {
    const uint32_t* mask = masks + static_cast<int64_t>(m) * ((vocab + 31) / 32);
    for (int32_t i = threadIdx.x; i < width; i += kThreads) {
      const int32_t id = begin + i;
      if (((mask[id >> 5] >> (id & 31)) & 1u) == 0) lg[i] = -INFINITY;
    }
  }
  __syncthreads();
  for (int32_t j = p.penalty_begin + threadIdx.x; j < p.penalty_end; j += kThreads) {
    const int32_t i = penalty_tokens[j] - begin;
    // Rounded step by step (no fused multiply-add), as the host computes it.
    if (i >= 0 && i < width)
      lg[i] = __fsub_rn(lg[i], __fadd_rn(__fmul_rn(p.frequency_penalty, static_cast<float>(penalty_counts[j])),
                                         p.presence_penalty));
  }
  __syncthreads();
  if (p.temperature > 0.0f && p.temperature != 1.0f) {
    const float inv_t = 1.0f / p.temperature;
    for (int32_t i = threadIdx.x; i < width; i += kThreads) lg[i] *= inv_t;
  }
  __syncthreads();

  Row row{lg, width, 1.0f, -INFINITY, INT32_MAX};
  int32_t n_valid = 0;
  for (int32_t i = threadIdx.x; i < width; i += kThreads) n_valid += lg[i] > -INFINITY;
  n_valid = block_sum_i(n_valid, sh);
  float max_value;
  block_top(row, INFINITY, -1, [](int32_t, float v) { return v > -INFINITY; }, sh, &max_value);
  double sum = 0.0;
  for (int32_t i = threadIdx.x; i < width; i += kThreads)
    if (lg[i] > -INFINITY) sum += expf(lg[i] - max_value);
  sum = block_sum_d(sum, sh);
  const int32_t length = p.temperature == 0.0f && p.top_logprobs < 0 ? 1 : kSliceCandidates;
  const int32_t n_listed = min(n_valid, length);
  if (n_listed > 0 && n_listed < n_valid) cut_to_count(row, n_listed, sh);
  // The kept tokens (n_listed of them), then each one's place in rank order.
  if (threadIdx.x == 0) n_collected = 0;
  __syncthreads();
  for (int32_t i = threadIdx.x; i < width; i += kThreads) {
    const float v = lg[i];
    if (row.kept(i, v)) {
      const int32_t at = atomicAdd(&n_collected, 1);
      if (at < kSliceCandidates) listed_ids[at] = begin + i, listed_values[at] = v;
    }
  }
  __syncthreads();
  SliceSummary& o = out[blockIdx.x];
  if (threadIdx.x < n_listed) {
    const float v = listed_values[threadIdx.x];
    const int32_t id = listed_ids[threadIdx.x];
    int32_t place = 0;
    for (int32_t j = 0; j < n_listed; ++j)
      place += listed_values[j] > v || (listed_values[j] == v && listed_ids[j] < id);
    o.ids[place] = id;
    o.values[place] = v;
  }
  if (threadIdx.x == 0) {
    o.max = n_valid > 0 ? max_value : -INFINITY;
    o.sum_exp = n_valid > 0 ? sum : 0.0;
    o.n_valid = n_valid;
    o.n_listed = n_listed;
  }
}

// One block per walk: walk_slice over the walk's row of the processed slice.
__global__ void __launch_bounds__(kThreads)
    walk_slices_kernel(const float* logits, int32_t width, const SliceWalk* walks, SliceWalkResult* out) {
  __shared__ Shared sh;
  const SliceWalk w = walks[blockIdx.x];
  const Row row{logits + static_cast<int64_t>(w.row) * width, width, 1.0f, -INFINITY, INT32_MAX};
  const float max = w.max;
  const int32_t i = walk_id_order(row, w.target, [max](float v) { return static_cast<double>(expf(v - max)); }, sh);
  if (threadIdx.x == 0) out[blockIdx.x] = SliceWalkResult{i, row.s(i)};
}

// One block per (row, slice of mask words): a disallowed token's logit becomes -inf.
__global__ void apply_token_masks_kernel(float* logits, int32_t vocab, int32_t words, const uint32_t* masks,
                                         const int32_t* mask_index) {
  const int32_t m = mask_index[blockIdx.y];
  if (m < 0) return;
  const uint32_t* mask = masks + static_cast<int64_t>(m) * words;
  float* lg = logits + static_cast<int64_t>(blockIdx.y) * vocab;
  for (int32_t w = blockIdx.x * blockDim.x + threadIdx.x; w < words; w += gridDim.x * blockDim.x) {
    const uint32_t bits = mask[w];
    if (bits == 0xffffffffu) continue;
    const int32_t end = min(32, vocab - w * 32);
    for (int32_t b = 0; b < end; ++b)
      if (((bits >> b) & 1u) == 0) lg[w * 32 + b] = -INFINITY;
  }
}

}  // namespace

void summarize_slices(float* logits, int32_t n_rows, ShardRange slice, int32_t vocab, const DeviceSamplingRow* rows,
                      const int32_t* penalty_tokens, const int32_t* penalty_counts, const uint32_t* masks,
                      const int32_t* mask_index, SliceSummary* out, cudaStream_t stream) {
  if (n_rows == 0) return;
  summarize_slices_kernel<<<n_rows, kThreads, 0, stream>>>(logits, slice.size(), slice.begin, vocab, rows,
                                                           penalty_tokens, penalty_counts, masks, mask_index, out);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

void walk_slices(const float* logits, int32_t width, const SliceWalk* walks, int32_t n_walks, SliceWalkResult* out,
                 cudaStream_t stream) {
  if (n_walks == 0) return;
  walk_slices_kernel<<<n_walks, kThreads, 0, stream>>>(logits, width, walks, out);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

void apply_token_masks(float* logits, int32_t n_rows, int32_t vocab, const uint32_t* masks,
                       const int32_t* mask_index, cudaStream_t stream) {
  if (n_rows == 0) return;
  constexpr int kMaskThreads = 256;
  const int32_t words = (vocab + 31) / 32;
  const dim3 grid((words + kMaskThreads - 1) / kMaskThreads, n_rows);
  apply_token_masks_kernel<<<grid, kMaskThreads, 0, stream>>>(logits, vocab, words, masks, mask_index);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

void sample_rows(float* logits, int32_t n_rows, int32_t vocab, const DeviceSamplingRow* rows,
                 const int32_t* penalty_tokens, const int32_t* penalty_counts, SampledToken* out,
                 cudaStream_t stream) {
  if (n_rows == 0) return;
  sample_rows_kernel<<<n_rows, kThreads, 0, stream>>>(logits, vocab, rows, penalty_tokens,
                                                      penalty_counts, out);
  GPTOSS_CUDA_CHECK_LAUNCH();
}

}  // namespace gptoss::cuda
