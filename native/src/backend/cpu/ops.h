// The gpt-oss forward pass as plain float32 operations: the numerical
// reference of the engine. The CPU runner is built from these; the CUDA
// backend checks each of its kernels against the matching function here.
//
// Conventions:
// - Activations are float32, row-major, one row per token.
// - Weights stay in their checkpoint formats (bf16, MXFP4) and are decoded on
//   the fly inside the loops; nothing is dequantized ahead of time.
// - Batch invariance: every output row depends only on its own input row and
//   the weights. Work is split across rows and output columns, never inside a
//   dot product, and each dot product has one fixed reduction order (see
//   dot_bf16), so a token gets bit-identical results alone or in any batch.
// - `pool` may be null (single-threaded); results do not depend on it.
#pragma once

#include <cstdint>
#include <vector>

#include "common/bf16.h"
#include "common/thread_pool.h"
#include "model/config.h"
#include "model/mxfp4.h"

namespace gptoss::cpu {

constexpr float kSwigluAlpha = 1.702f;

// ---- reductions ------------------------------------------------------------

// sum_i x[i] * w[i]. Fixed order: 8 interleaved partial sums (lane j takes
// i = j, j+8, ...; the tail below a multiple of 8 goes to lanes 0..), then
// ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
float dot_bf16(const float* x, const bf16* w, int32_t n);
float dot_f32(const float* x, const float* y, int32_t n);

// ---- elementwise and per-row ops ---------------------------------------------

// out[r] = float(table[tokens[r]]), table is bf16 [vocab, dim]. Token ids must
// be in range (the runner validates them).
void embed_tokens(const int32_t* tokens, int32_t n_rows, const bf16* table, int32_t dim,
                  float* out);

// out[r] = x[r] * (1 / sqrt(mean(x[r]^2) + eps)) * weight, weight bf16 [dim].
// out may alias x.
void rmsnorm(const float* x, int32_t n_rows, int32_t dim, const bf16* weight, float eps,
             float* out);

// ---- tensor parallelism ------------------------------------------------------

// x[i] += (((p[0][i] + p[1][i]) + p[2][i]) + ...) for i < n: the all-reduce
// of `n_ranks` partial sums fused with the residual add. Every rank sums in
// rank order, so the residual stream each keeps is the same bits everywhere;
// with one rank this is x[i] += p[0][i].
void all_reduce_residual_add(float* x, const float* const* partials, int32_t n_ranks, int64_t n);

// ---- matrix products -------------------------------------------------------

// y[r][o] = dot_bf16(x[r], weight[o]) + bias[o] for r < n_rows, o < out_dim.
// weight is bf16 [out_dim, in_dim] (the checkpoint's layout); bias is bf16
// [out_dim] or null. Parallel over output columns.
void linear_bf16(const float* x, int32_t n_rows, int32_t in_dim, const bf16* weight,
                 const bf16* bias, int32_t out_dim, float* y, ThreadPool* pool);

// y[r][o] = sum_i x[r][i] * W[o][i] + bias[o] with W the MXFP4 matrix
// [weight.rows, weight.cols] decoded block by block inside the loop; x is
// [n_rows, weight.cols], y is [n_rows, weight.rows], bias bf16 [weight.rows] or
// null. Reduction order: per block of 32 values, the block's dot product in
// the order of dot_f32, then the block sums added in block order.
void linear_mxfp4(const float* x, int32_t n_rows, const Mxfp4Matrix& weight, const bf16* bias,
                  float* y, ThreadPool* pool);

// ---- rotary position embedding (YaRN) ---------------------------------------

// Inverse frequencies for head_dim/2 rotation pairs and the attention factor
// that scales cos and sin, computed as transformers' `_compute_yarn_parameters`
// does in float32 (correction range not rounded when rope.truncate is false).
struct RopeTable {
  int32_t head_dim = 0;
  std::vector<float> inv_freq;  // head_dim / 2
  float attention_factor = 1.0f;
};
RopeTable make_yarn_rope_table(int32_t head_dim, const YarnRope& rope);

// cos[i] = cos(pos * inv_freq[i]) * attention_factor, sin likewise; the angle
// is the float32 product, as in transformers. cos and sin hold head_dim/2.
void rope_cos_sin(const RopeTable& table, int32_t pos, float* cos, float* sin);

// Rotates `n_heads` consecutive head vectors of x in place, non-interleaved:
// with a = x[i], b = x[i + head_dim/2]: a' = a*cos[i] - b*sin[i],
// b' = b*cos[i] + a*sin[i].
void apply_rope(float* x, int32_t n_heads, int32_t head_dim, const float* cos, const float* sin);

// ---- paged KV cache and attention ------------------------------------------

// One layer's view of a KV pool. A block holds, for each layer of its
// attention kind in layer order, K [block_size][kv_dim] followed by
// V [block_size][kv_dim]. A sequence's logical block b (positions
// b*block_size ...) lives in physical block block_table[b].
struct PagedKvLayer {
  float* pool = nullptr;
  int64_t block_floats = 0;  // floats per block (all layers of the kind)
  int64_t k_offset = 0;      // floats from a block's start to this layer's K
  int64_t v_offset = 0;      // floats from a block's start to this layer's V
  int32_t block_size = 0;    // tokens per block
  int32_t kv_dim = 0;        // num_kv_heads * head_dim

  float* key(const int32_t* block_table, int32_t pos) const;
  float* value(const int32_t* block_table, int32_t pos) const;
};

// Copies one token's k and v (kv_dim floats each) into its slot at `pos`.
void kv_store(const PagedKvLayer& kv, const int32_t* block_table, int32_t pos, const float* k,
              const float* v);

// First key position a query at `pos` attends to: 0 on full-attention layers
// (sliding_window == 0), else the last `sliding_window` positions including
// `pos` itself (transformers: kv > q - window).
int32_t attention_first_pos(int32_t pos, int32_t sliding_window);

struct AttentionShape {
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
};

// One query head of one token at position `pos` (q_head: head_dim floats,
// RoPE applied) over the cached keys/values of positions
// [attention_first_pos(pos, sliding_window), pos], with K/V head
// q_head_index / (num_q_heads / num_kv_heads):
//   s_j = (q . k_j) / sqrt(head_dim);  m = max(max_j s_j, sink)
//   p_j = exp(s_j - m) / (sum_j exp(s_j - m) + exp(sink - m))
//   out = sum_j p_j v_j            (head_dim floats)
// The sink logit is unscaled and has no value. `scores` is scratch storage.
void attention_head(const float* q_head, int32_t q_head_index, const AttentionShape& shape,
                    const PagedKvLayer& kv, const int32_t* block_table, int32_t pos,
                    int32_t sliding_window, float sink, std::vector<float>& scores, float* out);

// ---- mixture of experts --------------------------------------------------------

// Picks the k largest of n_experts router logits (descending; equal logits:
// lower expert index first) and softmaxes over those k only.
void router_top_k(const float* logits, int32_t n_experts, int32_t k, int32_t* experts,
                  float* weights);

// Clamped SwiGLU on interleaved gate/up rows: gate_up is [n_rows, 2*width]
// with gate = even columns, up = odd columns; out is [n_rows, width]:
//   g = min(gate, limit); u = clamp(up, -limit, limit)
//   out = (u + 1) * g * sigmoid(kSwigluAlpha * g)
void swiglu_clamped(const float* gate_up, int32_t n_rows, int32_t width, float limit, float* out);

}  // namespace gptoss::cpu
