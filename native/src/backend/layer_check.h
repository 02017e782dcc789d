// Teacher-forced per-layer check: a backend's decoder layers against the CPU
// reference, every layer fed the same input.
//
// A random 20b network is chaotic (a router top-k choice decided by bf16
// rounding changes everything after it), so whole-model logits cannot judge
// 24 layers. Here each layer l of the backend under test gets the residual
// stream x_l the check holds, and its outputs (attention output, router
// logits and choice, MoE output, residual) are compared with the reference's
// outputs from the same x_l. x_{l+1} is the reference's residual at the
// checked positions and the backend's elsewhere: the reference runs only the
// checked rows (the CPU cannot afford 24 layers of MoE over a 4k prompt), the
// backend runs every row, so both see identical inputs at every layer.
//
// A batch of sequences runs as it would be served: the prompts as chunks of
// one step (tiled products, prefill attention), then decode steps holding
// every sequence's next token (GEMVs and split attention for a few
// sequences, tiles and tensor-core attention for many).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "common/thread_pool.h"
#include "model/config.h"
#include "model/weights.h"

namespace gptoss {

// What one decoder layer computed for `rows` rows.
struct LayerOutputs {
  int32_t rows = 0;
  std::vector<float> attn;           // [rows, q_dim]: attention output before the output projection
  std::vector<float> router_logits;  // [rows, num_experts]
  std::vector<int32_t> experts;      // [rows, experts_per_token]: chosen experts by rank
  std::vector<float> moe;            // [rows, hidden]: the MoE block's output
  std::vector<float> residual;       // [rows, hidden]: the residual stream leaving the layer

  void resize(const ModelConfig& config, int32_t n);
  // Row `row` of these outputs := row `from_row` of `from`.
  void set_row(int32_t row, const LayerOutputs& from, int32_t from_row);
};

// One sequence of a check: a prompt, then decode positions.
struct LayerCheckSequence {
  std::vector<int32_t> tokens;   // prompt then decode tokens
  int32_t n_prompt = 0;
  std::vector<int32_t> checked;  // ascending positions the reference computes (may be none)
};

// A backend's decoder layers, one at a time.
class LayerUnderTest {
 public:
  virtual ~LayerUnderTest() = default;
  // Runs layer `layer` over `batch`, whose residual streams entering the
  // layer are x ([rows, hidden]: each sequence's positions in turn): every
  // prompt as a chunk of one step, then one decode step per later position
  // holding every sequence's next token (their K/V cached as the steps go).
  // Fills `out` for every row of x.
  virtual void run_layer(int32_t layer, const std::vector<LayerCheckSequence>& batch, const std::vector<float>& x,
                         LayerOutputs& out) = 0;
};

// Relative (norm-wise) error bounds per compared output.
struct LayerCheckTolerances {
  double attn = 2e-2;
  double router_logits = 1e-2;
  double moe = 2e-2;
  double residual = 1e-2;
};

// The positions a sequence's check compares: all of them up to `dense`
// positions; beyond, a sample that still covers what depends on position -
// the first rows, both sides of the sliding window's edge, evenly spread
// rows, the prompt's last rows and every decode position.
std::vector<int32_t> layer_check_positions(int32_t n_prompt, int32_t n_total, int32_t sliding_window,
                                           int32_t dense, int32_t spread);

// Worst figure of one output over the layers checked so far.
struct LayerCheckWorst {
  double error = 0.0;
  int32_t layer = -1;
};

struct LayerCheckSummary {
  LayerCheckWorst attn, router_logits, moe, residual;
  int32_t worst_layer = -1;       // the layer with the largest error / tolerance
  double worst_ratio = 0.0;       // (infinite from the first layer with a router mismatch)
  std::string worst_what;         // which output of that layer, in which run
  int64_t router_rows = 0;        // rows whose expert choice was compared
  int64_t router_near_ties = 0;   // choices that differ where the reference's k-th and
                                  // (k+1)-th logits are within bf16 rounding
  int64_t router_error_ties = 0;  // ... or that the router logits' measured error explains
                                  // (explained_by_logit_error)
  int64_t router_mismatches = 0;  // choices that differ anywhere else
  int32_t failures = 0;           // layers with an output past its tolerance
};

// Whether a checked row's expert choice differs from the reference's only
// where the router logits' measured error explains it: for every expert the
// reference chose and the checked side did not, and every expert the checked
// side chose instead, the checked side's own logits put the second at or
// above the first, and the reference's gap between them is within the two
// logits' errors (which the router-logit tolerance judges). Any ranks, not
// only the k-th and (k+1)-th: three logits within the error can reorder
// past the cut. A choice against the checked side's own logits is never
// explained. Both choices sorted.
bool explained_by_logit_error(const float* ref_logits, const float* got_logits, const std::vector<int32_t>& ref_chosen,
                              const std::vector<int32_t>& got_chosen);

class TeacherForcedCheck {
 public:
  // `pool` runs the reference (null: one thread).
  TeacherForcedCheck(const ModelConfig& config, const Weights& weights, ThreadPool* pool,
                     LayerCheckTolerances tolerances);

  // Checks every layer on a batch of sequences (all with the same number of
  // decode positions), one line per layer on stdout tagged with `name`.
  // Returns the residual stream leaving the last layer (every row as in
  // LayerUnderTest::run_layer; the reference's at checked positions).
  std::vector<float> run(const std::string& name, const std::vector<LayerCheckSequence>& batch,
                         LayerUnderTest& backend);

  // The reference layer `layer` at positions `rows` (ascending) of the
  // sequence whose residual stream entering the layer is x ([n, hidden]):
  // K/V are computed from x at every position those rows read.
  // `x_after_attention`, when given, receives those rows' residual stream
  // between the attention and the MoE block.
  LayerOutputs reference(int32_t layer, const std::vector<float>& x, const std::vector<int32_t>& rows,
                         std::vector<float>* x_after_attention = nullptr) const;

  const LayerCheckSummary& summary() const { return summary_; }
  const ModelConfig& config() const { return config_; }

 private:
  // True when `chosen` (sorted) is the reference's choice with its k-th
  // expert replaced by the (k+1)-th and those two logits are within what
  // rounding the router's input to bf16 can move their difference:
  // 2^-8 * sum_i |(w_k[i] - w_k1[i]) h[i]|, h the normalised input.
  // The reference's k-th and (k+1)-th experts when `chosen` is its choice
  // with the one replaced by the other; {-1, -1} otherwise.
  std::pair<int32_t, int32_t> swapped_pair(const float* logits, const std::vector<int32_t>& chosen) const;
  bool near_tie(int32_t layer, const float* x_row, const float* logits, const std::vector<int32_t>& chosen) const;
  void record(int32_t layer, const std::string& what, double error, double tolerance,
              LayerCheckWorst& worst);

  const ModelConfig& config_;
  const Weights& weights_;
  ThreadPool* pool_;
  LayerCheckTolerances tol_;
  cpu::RopeTable rope_;
  LayerCheckSummary summary_;
};

// The CPU reference as the layer under test, every position: the check's
// self-test (it must find no difference at all).
class ReferenceLayers final : public LayerUnderTest {
 public:
  explicit ReferenceLayers(const TeacherForcedCheck& check) : check_(check) {}
  void run_layer(int32_t layer, const std::vector<LayerCheckSequence>& batch, const std::vector<float>& x,
                 LayerOutputs& out) override;

 private:
  const TeacherForcedCheck& check_;
};

}  // namespace gptoss
