#include "backend/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace gptoss::cpu {

namespace {

constexpr int32_t kLanes = 8;

// The fixed combination of the 8 partial sums shared by every dot product.
inline float reduce_lanes(const float* acc) {
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// Splits `n` independent items across the pool (or runs them inline).
template <typename Fn>
void for_range(ThreadPool* pool, int64_t n, Fn&& fn) {
  if (pool == nullptr) {
    fn(int64_t{0}, n);
  } else {
    pool->parallel_for(n, fn);
  }
}

}  // namespace

float dot_bf16(const float* x, const bf16* w, int32_t n) {
  float acc[kLanes] = {};
  int32_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int32_t j = 0; j < kLanes; ++j) acc[j] += x[i + j] * bf16_to_float(w[i + j]);
  }
  for (int32_t j = 0; i < n; ++i, ++j) acc[j] += x[i] * bf16_to_float(w[i]);
  return reduce_lanes(acc);
}

float dot_f32(const float* x, const float* y, int32_t n) {
  float acc[kLanes] = {};
  int32_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int32_t j = 0; j < kLanes; ++j) acc[j] += x[i + j] * y[i + j];
  }
  for (int32_t j = 0; i < n; ++i, ++j) acc[j] += x[i] * y[i];
  return reduce_lanes(acc);
}

void embed_tokens(const int32_t* tokens, int32_t n_rows, const bf16* table, int32_t dim,
                  float* out) {
  for (int32_t r = 0; r < n_rows; ++r) {
    const bf16* row = table + static_cast<int64_t>(tokens[r]) * dim;
    float* dst = out + static_cast<int64_t>(r) * dim;
    for (int32_t i = 0; i < dim; ++i) dst[i] = bf16_to_float(row[i]);
  }
}

void rmsnorm(const float* x, int32_t n_rows, int32_t dim, const bf16* weight, float eps,
             float* out) {
  for (int32_t r = 0; r < n_rows; ++r) {
    const float* src = x + static_cast<int64_t>(r) * dim;
    float* dst = out + static_cast<int64_t>(r) * dim;
    const float mean_square = dot_f32(src, src, dim) / static_cast<float>(dim);
    const float inv_rms = 1.0f / std::sqrt(mean_square + eps);
    for (int32_t i = 0; i < dim; ++i) dst[i] = bf16_to_float(weight[i]) * (src[i] * inv_rms);
  }
}

void all_reduce_residual_add(float* x, const float* const* partials, int32_t n_ranks, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float sum = partials[0][i];
    for (int32_t r = 1; r < n_ranks; ++r) sum += partials[r][i];
    x[i] += sum;
  }
}

void linear_bf16(const float* x, int32_t n_rows, int32_t in_dim, const bf16* weight,
                 const bf16* bias, int32_t out_dim, float* y, ThreadPool* pool) {
  for_range(pool, out_dim, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const bf16* w = weight + o * in_dim;
      const float b = bias ? bf16_to_float(bias[o]) : 0.0f;
      for (int32_t r = 0; r < n_rows; ++r) {
        y[static_cast<int64_t>(r) * out_dim + o] =
            dot_bf16(x + static_cast<int64_t>(r) * in_dim, w, in_dim) + b;
      }
    }
  });
}

void linear_mxfp4(const float* x, int32_t n_rows, const Mxfp4Matrix& weight, const bf16* bias,
                  float* y, ThreadPool* pool) {
  const int32_t n_blocks = weight.blocks_per_row();
  for_range(pool, weight.rows, [&](int64_t begin, int64_t end) {
    std::vector<float> row(weight.cols);
    for (int64_t o = begin; o < end; ++o) {
      const uint8_t* blocks = weight.row_blocks(static_cast<int32_t>(o));
      const uint8_t* scales = weight.row_scales(static_cast<int32_t>(o));
      for (int32_t b = 0; b < n_blocks; ++b) {
        decode_mxfp4_block(blocks + b * kMxfp4BlockBytes, scales[b],
                           row.data() + b * kMxfp4BlockValues);
      }
      const float bias_o = bias ? bf16_to_float(bias[o]) : 0.0f;
      for (int32_t r = 0; r < n_rows; ++r) {
        const float* xr = x + static_cast<int64_t>(r) * weight.cols;
        float sum = 0.0f;
        for (int32_t b = 0; b < n_blocks; ++b) {
          sum += dot_f32(xr + b * kMxfp4BlockValues, row.data() + b * kMxfp4BlockValues,
                         kMxfp4BlockValues);
        }
        y[static_cast<int64_t>(r) * weight.rows + o] = sum + bias_o;
      }
    }
  });
}

RopeTable make_yarn_rope_table(int32_t head_dim, const YarnRope& rope) {
  // Mirrors transformers' float32 arithmetic so the angles agree bit for bit
  // where possible; the correction range is computed in double as there.
  const int32_t half = head_dim / 2;
  const double two_pi = 2.0 * M_PI;
  auto correction_dim = [&](double rotations) {
    return head_dim * std::log(rope.original_max_position / (rotations * two_pi)) /
           (2.0 * std::log(rope.theta));
  };
  double low = correction_dim(rope.beta_fast);
  double high = correction_dim(rope.beta_slow);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(head_dim - 1));
  if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp

  RopeTable table;
  table.head_dim = head_dim;
  table.attention_factor = static_cast<float>(0.1 * std::log(rope.factor) + 1.0);
  table.inv_freq.resize(half);
  const float base = static_cast<float>(rope.theta);
  const float factor = static_cast<float>(rope.factor);
  const float low_f = static_cast<float>(low);
  const float range_f = static_cast<float>(high - low);
  for (int32_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float pos_freq = static_cast<float>(std::pow(static_cast<double>(base), exponent));
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (factor * pos_freq);
    const float ramp = std::clamp((static_cast<float>(i) - low_f) / range_f, 0.0f, 1.0f);
    const float extrapolation_weight = 1.0f - ramp;
    table.inv_freq[i] = interpolation * (1.0f - extrapolation_weight) +
                        extrapolation * extrapolation_weight;
  }
  return table;
}

void rope_cos_sin(const RopeTable& table, int32_t pos, float* cos, float* sin) {
  const int32_t half = table.head_dim / 2;
  for (int32_t i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * table.inv_freq[i];
    cos[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * table.attention_factor;
    sin[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * table.attention_factor;
  }
}

void apply_rope(float* x, int32_t n_heads, int32_t head_dim, const float* cos, const float* sin) {
  const int32_t half = head_dim / 2;
  for (int32_t h = 0; h < n_heads; ++h) {
    float* first = x + static_cast<int64_t>(h) * head_dim;
    float* second = first + half;
    for (int32_t i = 0; i < half; ++i) {
      const float a = first[i];
      const float b = second[i];
      first[i] = a * cos[i] - b * sin[i];
      second[i] = b * cos[i] + a * sin[i];
    }
  }
}

float* PagedKvLayer::key(const int32_t* block_table, int32_t pos) const {
  const int64_t block = block_table[pos / block_size];
  return pool + block * block_floats + k_offset + static_cast<int64_t>(pos % block_size) * kv_dim;
}

float* PagedKvLayer::value(const int32_t* block_table, int32_t pos) const {
  const int64_t block = block_table[pos / block_size];
  return pool + block * block_floats + v_offset + static_cast<int64_t>(pos % block_size) * kv_dim;
}

void kv_store(const PagedKvLayer& kv, const int32_t* block_table, int32_t pos, const float* k,
              const float* v) {
  std::memcpy(kv.key(block_table, pos), k, sizeof(float) * kv.kv_dim);
  std::memcpy(kv.value(block_table, pos), v, sizeof(float) * kv.kv_dim);
}

int32_t attention_first_pos(int32_t pos, int32_t sliding_window) {
  return sliding_window > 0 ? std::max(0, pos - sliding_window + 1) : 0;
}

void attention_head(const float* q_head, int32_t q_head_index, const AttentionShape& shape,
                    const PagedKvLayer& kv, const int32_t* block_table, int32_t pos,
                    int32_t sliding_window, float sink, std::vector<float>& scores, float* out) {
  const int32_t first = attention_first_pos(pos, sliding_window);
  const int32_t n_keys = pos - first + 1;
  const int32_t kv_head = q_head_index / (shape.num_q_heads / shape.num_kv_heads);
  const int64_t head_offset = static_cast<int64_t>(kv_head) * shape.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));

  scores.resize(n_keys);
  float max_logit = sink;
  for (int32_t j = 0; j < n_keys; ++j) {
    const float* k = kv.key(block_table, first + j) + head_offset;
    scores[j] = dot_f32(q_head, k, shape.head_dim) * scale;
    max_logit = std::max(max_logit, scores[j]);
  }
  float denominator = 0.0f;
  for (int32_t j = 0; j < n_keys; ++j) {
    scores[j] = std::exp(scores[j] - max_logit);
    denominator += scores[j];
  }
  denominator += std::exp(sink - max_logit);

  std::fill(out, out + shape.head_dim, 0.0f);
  for (int32_t j = 0; j < n_keys; ++j) {
    const float p = scores[j] / denominator;
    const float* v = kv.value(block_table, first + j) + head_offset;
    for (int32_t d = 0; d < shape.head_dim; ++d) out[d] += p * v[d];
  }
}

void router_top_k(const float* logits, int32_t n_experts, int32_t k, int32_t* experts,
                  float* weights) {
  std::vector<int32_t> order(n_experts);
  for (int32_t e = 0; e < n_experts; ++e) order[e] = e;
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  const float top = logits[order[0]];
  float sum = 0.0f;
  for (int32_t i = 0; i < k; ++i) {
    experts[i] = order[i];
    weights[i] = std::exp(logits[order[i]] - top);
    sum += weights[i];
  }
  for (int32_t i = 0; i < k; ++i) weights[i] /= sum;
}

void swiglu_clamped(const float* gate_up, int32_t n_rows, int32_t width, float limit, float* out) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* in = gate_up + r * 2 * width;
    float* dst = out + r * width;
    for (int32_t i = 0; i < width; ++i) {
      const float gate = std::min(in[2 * i], limit);
      const float up = std::clamp(in[2 * i + 1], -limit, limit);
      const float glu = gate * (1.0f / (1.0f + std::exp(-kSwigluAlpha * gate)));
      dst[i] = (up + 1.0f) * glu;
    }
  }
}

}  // namespace gptoss::cpu
