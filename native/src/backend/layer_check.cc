#include "backend/layer_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <numeric>

#include "backend/cpu/decoder_layer.h"
#include "common/error.h"
#include "common/relative_error.h"

namespace gptoss {

namespace {

constexpr int32_t kRefBlockSize = 16;  // the reference's private KV cache

// Rows `rows` of a row-major matrix of `width` columns.
template <typename T>
std::vector<T> gather(const std::vector<T>& m, int32_t width, const std::vector<int32_t>& rows) {
  std::vector<T> out(rows.size() * static_cast<size_t>(width));
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy_n(m.begin() + static_cast<size_t>(rows[i]) * width, width, out.begin() + i * width);
  return out;
}

double finite_or_inf(double e) { return std::isfinite(e) ? e : INFINITY; }

}  // namespace

void LayerOutputs::resize(const ModelConfig& c, int32_t n) {
  rows = n;
  attn.resize(static_cast<size_t>(n) * c.q_dim());
  router_logits.resize(static_cast<size_t>(n) * c.num_experts);
  experts.resize(static_cast<size_t>(n) * c.experts_per_token);
  moe.resize(static_cast<size_t>(n) * c.hidden_size);
  residual.resize(static_cast<size_t>(n) * c.hidden_size);
}

void LayerOutputs::set_row(int32_t row, const LayerOutputs& from, int32_t from_row) {
  auto copy = [&](auto& to, const auto& src) {
    const size_t width = src.size() / from.rows;
    std::copy_n(src.begin() + from_row * width, width, to.begin() + row * width);
  };
  copy(attn, from.attn);
  copy(router_logits, from.router_logits);
  copy(experts, from.experts);
  copy(moe, from.moe);
  copy(residual, from.residual);
}

std::vector<int32_t> layer_check_positions(int32_t n_prompt, int32_t n_total, int32_t sliding_window,
                                           int32_t dense, int32_t spread) {
  std::vector<int32_t> pos;
  if (n_total <= dense) {
    pos.resize(n_total);
    std::iota(pos.begin(), pos.end(), 0);
    return pos;
  }
  for (int32_t p = 0; p < 4; ++p) pos.push_back(p);
  for (int32_t p = sliding_window - 2; p <= sliding_window + 1; ++p) pos.push_back(p);
  for (int32_t i = 1; i <= spread; ++i) pos.push_back(static_cast<int32_t>(int64_t(n_prompt) * i / (spread + 1)));
  for (int32_t p = n_prompt - 4; p < n_total; ++p) pos.push_back(p);  // the prompt's tail, every decode step
  pos.erase(std::remove_if(pos.begin(), pos.end(), [&](int32_t p) { return p < 0 || p >= n_total; }), pos.end());
  std::sort(pos.begin(), pos.end());
  pos.erase(std::unique(pos.begin(), pos.end()), pos.end());
  return pos;
}

TeacherForcedCheck::TeacherForcedCheck(const ModelConfig& config, const Weights& weights, ThreadPool* pool,
                                       LayerCheckTolerances tolerances)
    : config_(config),
      weights_(weights),
      pool_(pool),
      tol_(tolerances),
      rope_(cpu::make_yarn_rope_table(config.head_dim, config.rope)) {}

LayerOutputs TeacherForcedCheck::reference(int32_t layer, const std::vector<float>& x,
                                           const std::vector<int32_t>& rows,
                                           std::vector<float>* x_after_attention) const {
  const ModelConfig& c = config_;
  const int32_t H = c.hidden_size;
  const int32_t n = static_cast<int32_t>(x.size() / H);
  const cpu::DecoderLayer block(c, layer, weights_.layers[layer], cpu::LayerShard::whole(c), rope_, pool_);

  // A private cache of the whole sequence in one table; only the positions
  // the rows read are filled.
  const int32_t n_blocks = (n + kRefBlockSize - 1) / kRefBlockSize;
  std::vector<int32_t> table(n_blocks);
  std::iota(table.begin(), table.end(), 0);
  cpu::PagedKvLayer kv;
  kv.block_size = kRefBlockSize;
  kv.kv_dim = c.kv_dim();
  kv.block_floats = 2LL * kRefBlockSize * kv.kv_dim;
  kv.k_offset = 0;
  kv.v_offset = static_cast<int64_t>(kRefBlockSize) * kv.kv_dim;
  std::vector<float> pool(static_cast<size_t>(n_blocks) * kv.block_floats);
  kv.pool = pool.data();

  std::vector<bool> read(n, false);
  for (int32_t r : rows)
    for (int32_t p = cpu::attention_first_pos(r, block.window()); p <= r; ++p) read[p] = true;
  std::vector<int32_t> kv_rows;
  for (int32_t p = 0; p < n; ++p)
    if (read[p]) kv_rows.push_back(p);
  auto slots_of = [&](const std::vector<int32_t>& ps) {
    std::vector<cpu::RowSlot> s;
    for (int32_t p : ps) s.push_back(cpu::RowSlot{p, table.data()});
    return s;
  };

  const int32_t m = static_cast<int32_t>(rows.size());
  std::vector<float> h(static_cast<size_t>(kv_rows.size()) * H);
  block.attention_norm(gather(x, H, kv_rows).data(), static_cast<int32_t>(kv_rows.size()), h.data());
  block.store_kv(h.data(), slots_of(kv_rows).data(), static_cast<int32_t>(kv_rows.size()), kv);

  LayerOutputs out;
  out.resize(c, m);
  std::vector<float> x_rows = gather(x, H, rows);
  h.resize(static_cast<size_t>(m) * H);
  block.attention_norm(x_rows.data(), m, h.data());
  block.attend(h.data(), slots_of(rows).data(), m, kv, out.attn.data());
  std::vector<float> proj(x_rows.size());
  block.attention_output(out.attn.data(), m, proj.data());
  for (size_t i = 0; i < x_rows.size(); ++i) x_rows[i] += proj[i];
  if (x_after_attention) *x_after_attention = x_rows;
  std::vector<float> expert_weights(out.experts.size());
  const cpu::MoeRouting routing{out.router_logits.data(), out.experts.data(), expert_weights.data()};
  block.route(x_rows.data(), m, routing, h.data());
  block.experts(h.data(), m, routing, out.moe.data());
  for (size_t i = 0; i < x_rows.size(); ++i) out.residual[i] = x_rows[i] + out.moe[i];
  return out;
}

std::pair<int32_t, int32_t> TeacherForcedCheck::swapped_pair(const float* logits,
                                                             const std::vector<int32_t>& chosen) const {
  const ModelConfig& c = config_;
  const int32_t K = c.experts_per_token;
  // The reference's order: descending logits, equal ones lower expert first.
  std::vector<int32_t> order(c.num_experts);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const int32_t a = order[K - 1], b = order[K];
  std::vector<int32_t> swapped(order.begin(), order.begin() + K);
  swapped[K - 1] = b;
  std::sort(swapped.begin(), swapped.end());
  if (swapped != chosen) return {-1, -1};  // more than the k-th choice differs
  return {a, b};
}

bool explained_by_logit_error(const float* ref_logits, const float* got_logits, const std::vector<int32_t>& ref_chosen,
                              const std::vector<int32_t>& got_chosen) {
  std::vector<int32_t> dropped, taken;  // sorted inputs: the two set differences
  std::set_difference(ref_chosen.begin(), ref_chosen.end(), got_chosen.begin(), got_chosen.end(),
                      std::back_inserter(dropped));
  std::set_difference(got_chosen.begin(), got_chosen.end(), ref_chosen.begin(), ref_chosen.end(),
                      std::back_inserter(taken));
  const auto error = [&](int32_t e) { return std::fabs(double(got_logits[e]) - ref_logits[e]); };
  for (const int32_t d : dropped)
    for (const int32_t t : taken)
      if (got_logits[t] < got_logits[d] || double(ref_logits[d]) - ref_logits[t] > error(d) + error(t)) return false;
  return true;
}

bool TeacherForcedCheck::near_tie(int32_t layer, const float* x_row, const float* logits,
                                  const std::vector<int32_t>& chosen) const {
  const ModelConfig& c = config_;
  const auto [a, b] = swapped_pair(logits, chosen);
  if (a < 0) return false;

  const LayerWeights& w = weights_.layers[layer];
  std::vector<float> h(c.hidden_size);
  cpu::rmsnorm(x_row, 1, c.hidden_size, w.post_attention_norm, c.rms_norm_eps, h.data());
  double bound = 0.0;
  for (int32_t i = 0; i < c.hidden_size; ++i) {
    const float wa = bf16_to_float(w.router_weight[static_cast<size_t>(a) * c.hidden_size + i]);
    const float wb = bf16_to_float(w.router_weight[static_cast<size_t>(b) * c.hidden_size + i]);
    bound += std::fabs((double(wa) - wb) * h[i]);
  }
  return double(logits[a]) - logits[b] <= std::ldexp(bound, -8);
}

void TeacherForcedCheck::record(int32_t layer, const std::string& what, double error, double tolerance,
                                LayerCheckWorst& worst) {
  error = finite_or_inf(error);
  if (error > worst.error || worst.layer < 0) worst = LayerCheckWorst{error, layer};
  const double ratio = error / tolerance;
  if (ratio > summary_.worst_ratio || summary_.worst_layer < 0) {
    summary_.worst_ratio = ratio;
    summary_.worst_layer = layer;
    summary_.worst_what = what;
  }
}

std::vector<float> TeacherForcedCheck::run(const std::string& name, const std::vector<LayerCheckSequence>& batch,
                                           LayerUnderTest& backend) {
  const ModelConfig& c = config_;
  const int32_t H = c.hidden_size, K = c.experts_per_token, E = c.num_experts;
  // Each sequence's first row in the batch's rows.
  std::vector<int32_t> first_row;
  int32_t n = 0;
  for (const LayerCheckSequence& s : batch) {
    const int32_t len = static_cast<int32_t>(s.tokens.size());
    if (s.n_prompt < 1 || s.n_prompt > len || len - s.n_prompt != int32_t(batch[0].tokens.size()) - batch[0].n_prompt ||
        !std::is_sorted(s.checked.begin(), s.checked.end()) ||
        (!s.checked.empty() && (s.checked.front() < 0 || s.checked.back() >= len)))
      throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "layer check: every sequence needs a prompt, the batch's number of "
                                               "decode positions and ascending checked positions");
    first_row.push_back(n);
    n += len;
  }
  std::vector<int32_t> tokens;
  for (const LayerCheckSequence& s : batch) tokens.insert(tokens.end(), s.tokens.begin(), s.tokens.end());
  std::vector<float> x(static_cast<size_t>(n) * H);
  cpu::embed_tokens(tokens.data(), n, weights_.embed_tokens, H, x.data());
  std::vector<int32_t> rows;  // the checked rows of the batch
  for (size_t s = 0; s < batch.size(); ++s)
    for (int32_t p : batch[s].checked) rows.push_back(first_row[s] + p);
  const int32_t m = static_cast<int32_t>(rows.size());

  for (int32_t l = 0; l < c.num_layers; ++l) {
    LayerOutputs got;
    backend.run_layer(l, batch, x, got);
    if (got.rows != n || got.residual.size() != x.size())
      throw Error(GPTOSS_ERR_BACKEND, "layer check: the backend returned " + std::to_string(got.rows) +
                                          " rows for " + std::to_string(n));
    // The reference, sequence by sequence, its rows in the order of `rows`.
    LayerOutputs ref;
    ref.resize(c, m);
    std::vector<float> x_mid(static_cast<size_t>(m) * H);
    for (size_t s = 0, i = 0; s < batch.size(); ++s) {
      if (batch[s].checked.empty()) continue;
      const std::vector<float> xs(x.begin() + static_cast<size_t>(first_row[s]) * H,
                                  x.begin() + (static_cast<size_t>(first_row[s]) + batch[s].tokens.size()) * H);
      std::vector<float> mid;
      const LayerOutputs one = reference(l, xs, batch[s].checked, &mid);
      for (int32_t r = 0; r < one.rows; ++r, ++i) {
        ref.set_row(static_cast<int32_t>(i), one, r);
        std::copy_n(mid.begin() + static_cast<size_t>(r) * H, H, x_mid.begin() + i * H);
      }
    }

    // Expert choices as sets (the order within a choice only orders the
    // weighted sum); a differing set is excused at a near tie only.
    std::vector<int32_t> agreeing;
    int32_t ties = 0, error_ties = 0, mismatches = 0;
    for (int32_t i = 0; i < m; ++i) {
      std::vector<int32_t> a(ref.experts.begin() + i * K, ref.experts.begin() + (i + 1) * K);
      std::vector<int32_t> b(got.experts.begin() + static_cast<size_t>(rows[i]) * K,
                             got.experts.begin() + static_cast<size_t>(rows[i] + 1) * K);
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      const float* ref_logits = &ref.router_logits[static_cast<size_t>(i) * E];
      const float* got_logits = &got.router_logits[static_cast<size_t>(rows[i]) * E];
      if (a == b) {
        agreeing.push_back(i);
      } else if (near_tie(l, &x_mid[static_cast<size_t>(i) * H], ref_logits, b)) {
        ++ties;
      } else {
        // Explained by the router logits' own error (which their tolerance
        // judges) or a wrong choice; either way each expert in either choice
        // is printed with both sides' logits ("+": the checked side's only).
        const bool explained = explained_by_logit_error(ref_logits, got_logits, a, b);
        ++(explained ? error_ties : mismatches);
        std::printf("  layer %d row %d: experts differ, %s (reference | checked: expert ref-logit checked-logit):", l,
                    rows[i], explained ? "within the measured logit errors" : "a mismatch");
        std::vector<int32_t> both = a;
        both.insert(both.end(), b.begin(), b.end());
        std::sort(both.begin(), both.end());
        both.erase(std::unique(both.begin(), both.end()), both.end());
        for (const int32_t e : both)
          std::printf(" %s%d %.5f %.5f", std::binary_search(a.begin(), a.end(), e) ? "" : "+", e, ref_logits[e],
                      got_logits[e]);
        std::printf("\n");
      }
    }
    std::vector<int32_t> agreeing_rows;
    for (int32_t i : agreeing) agreeing_rows.push_back(rows[i]);
    const double e_attn = relative_error(gather(got.attn, c.q_dim(), rows), ref.attn);
    const double e_router = relative_error(gather(got.router_logits, E, rows), ref.router_logits);
    const double e_moe = relative_error(gather(got.moe, H, agreeing_rows), gather(ref.moe, H, agreeing));
    const double e_res = relative_error(gather(got.residual, H, agreeing_rows), gather(ref.residual, H, agreeing));
    record(l, "attention output (" + name + ")", e_attn, tol_.attn, summary_.attn);
    record(l, "router logits (" + name + ")", e_router, tol_.router_logits, summary_.router_logits);
    record(l, "moe output (" + name + ")", e_moe, tol_.moe, summary_.moe);
    record(l, "residual (" + name + ")", e_res, tol_.residual, summary_.residual);
    if (mismatches > 0 && summary_.worst_ratio < INFINITY) {  // the first layer choosing wrong experts
      summary_.worst_ratio = INFINITY;
      summary_.worst_layer = l;
      summary_.worst_what = std::to_string(mismatches) + " router mismatches (" + name + ")";
    }
    summary_.router_rows += m;
    summary_.router_near_ties += ties;
    summary_.router_error_ties += error_ties;
    summary_.router_mismatches += mismatches;
    const bool ok = e_attn <= tol_.attn && e_router <= tol_.router_logits && e_moe <= tol_.moe &&
                    e_res <= tol_.residual && mismatches == 0;
    summary_.failures += !ok;
    std::printf("%s layer %2d %-7s attn %.2e  router %.2e  moe %.2e  residual %.2e  choices %d/%d near-ties %d+%d mismatches %d  %s\n",
                name.c_str(), l, c.layer_kinds[l] == AttnKind::Sliding ? "sliding" : "full", e_attn, e_router,
                e_moe, e_res, static_cast<int>(agreeing.size()), m, ties, error_ties, mismatches, ok ? "PASS" : "FAIL");
    std::fflush(stdout);

    x = std::move(got.residual);
    for (int32_t i = 0; i < m; ++i)
      std::copy_n(ref.residual.begin() + static_cast<size_t>(i) * H, H, x.begin() + static_cast<size_t>(rows[i]) * H);
  }
  return x;
}

void ReferenceLayers::run_layer(int32_t layer, const std::vector<LayerCheckSequence>& batch,
                                const std::vector<float>& x, LayerOutputs& out) {
  // A reference row does not depend on how the sequences are batched or chunked.
  const size_t H = check_.config().hidden_size;
  out.resize(check_.config(), static_cast<int32_t>(x.size() / H));
  size_t first = 0;
  for (const LayerCheckSequence& s : batch) {
    std::vector<int32_t> all(s.tokens.size());
    std::iota(all.begin(), all.end(), 0);
    const std::vector<float> xs(x.begin() + first * H, x.begin() + (first + s.tokens.size()) * H);
    const LayerOutputs one = check_.reference(layer, xs, all);
    for (int32_t r = 0; r < one.rows; ++r) out.set_row(static_cast<int32_t>(first) + r, one, r);
    first += s.tokens.size();
  }
}

}  // namespace gptoss
