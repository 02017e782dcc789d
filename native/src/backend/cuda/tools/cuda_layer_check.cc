// gptoss-cuda-layer-check --model DIR [--prompts 100,1000,4500] [--decode 4]
//     [--dense 128] [--spread 12] [--batch 160] [--batch-prompt 24]
//     [--batch-checked 16] [--threads N] [--seed N] [--reference-only]
//
// The teacher-forced per-layer check (backend/layer_check.h) of the CUDA
// runner against the CPU reference, every layer of the checkpoint, each CUDA
// layer fed the residual stream the check holds. Two batches of random
// tokens, each served as the engine would:
// - "prompts": the --prompts prompts in one step (one chunk each: tiled
//   products, prefill attention), then --decode steps of all of them (GEMVs,
//   split decode attention over up to 4.5k keys). Sequences of up to --dense
//   positions are checked at every position; longer ones at the sample of
//   layer_check_positions (first rows, both sides of the sliding window's
//   edge, --spread rows across the prompt, the prompt's tail, every decode
//   step), which keeps the CPU's share to K/V over the whole prefix on full
//   layers and the rest on the sample;
// - "decode batch": --batch sequences of --batch-prompt tokens, then 2 decode
//   steps of all of them (the streamed expert kernel, tensor-core decode attention
//   from 128 sequences); the reference checks --batch-checked of them at
//   their last prompt row and both decode rows (--batch 0 leaves it out).
// --reference-only checks the CPU reference against itself instead (no GPU:
// the tool's own self-test, which must find no difference, and the CPU
// share's time). Prints one line per layer and batch, then the worst
// figures and layer.
// Exit status 1 when an output passes its tolerance or an expert choice
// differs away from a near tie.
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <string>

#include "backend/cuda/cuda_runner.h"
#include "backend/cuda/tools/check_util.h"
#include "backend/cuda/tools/plan_builder.h"
#include "backend/layer_check.h"
#include "model/weights.h"

using namespace gptoss;
using namespace gptoss::cuda::check;

namespace {

// The CUDA runner's layers; sequence s of a batch uses row s of `blocks`.
class CudaLayers final : public LayerUnderTest {
 public:
  CudaLayers(CudaRunner& runner, const PlanBuilder& blocks) : runner_(runner), blocks_(blocks) {}

  void run_layer(int32_t layer, const std::vector<LayerCheckSequence>& batch, const std::vector<float>& x,
                 LayerOutputs& out) override {
    const size_t H = runner_.config().hidden_size;
    out.resize(runner_.config(), static_cast<int32_t>(x.size() / H));
    // One step for the prompts, then one per decode position; rows of a
    // step are gathered from and scattered back to the batch's rows.
    const int32_t n_decode = static_cast<int32_t>(batch[0].tokens.size()) - batch[0].n_prompt;
    for (int32_t d = -1; d < n_decode; ++d) {
      BatchPlan plan;
      std::vector<int32_t> rows;
      for (int32_t s = 0, first = 0; s < static_cast<int32_t>(batch.size()); first += batch[s].tokens.size(), ++s) {
        const LayerCheckSequence& q = batch[s];
        const int32_t begin = d < 0 ? 0 : q.n_prompt + d, end = d < 0 ? q.n_prompt : begin + 1;
        blocks_.add(plan, s, begin, std::vector<int32_t>(q.tokens.begin() + begin, q.tokens.begin() + end), false);
        for (int32_t p = begin; p < end; ++p) rows.push_back(first + p);
      }
      std::vector<float> step_x(rows.size() * H);
      for (size_t i = 0; i < rows.size(); ++i) std::copy_n(x.begin() + rows[i] * H, H, step_x.begin() + i * H);
      runner_.forward_layer(plan, layer, step_x, step_);
      for (size_t i = 0; i < rows.size(); ++i) out.set_row(rows[i], step_, static_cast<int32_t>(i));
    }
  }

 private:
  CudaRunner& runner_;
  const PlanBuilder& blocks_;
  LayerOutputs step_;
};

std::vector<int32_t> parse_lengths(const std::string& list) {
  std::vector<int32_t> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::atoi(item.c_str()));
  return out;
}

void print_worst(const char* what, const LayerCheckWorst& w, double tol) {
  std::printf("layer check worst %-16s %.3e at layer %d (tol %.0e)\n", what, w.error, w.layer, tol);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model;
  bool reference_only = false;
  std::vector<int32_t> prompts = {100, 1000, 4500};
  int32_t decode = 4, dense = 128, spread = 12, threads = 0;
  int32_t batch_seqs = 160, batch_prompt = 24, batch_checked = 16;
  uint64_t seed = std::chrono::steady_clock::now().time_since_epoch().count();
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--reference-only") reference_only = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--reference-only") --i;  // a flag without a value
    else if (a == "--model") model = argv[i + 1];
    else if (a == "--prompts") prompts = parse_lengths(argv[i + 1]);
    else if (a == "--decode") decode = std::atoi(argv[i + 1]);
    else if (a == "--dense") dense = std::atoi(argv[i + 1]);
    else if (a == "--spread") spread = std::atoi(argv[i + 1]);
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--batch") batch_seqs = std::atoi(argv[i + 1]);
    else if (a == "--batch-prompt") batch_prompt = std::atoi(argv[i + 1]);
    else if (a == "--batch-checked") batch_checked = std::atoi(argv[i + 1]);
    else if (a == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 10);
  }
  if (model.empty() || prompts.empty() || decode < 0 || batch_prompt < 1 || batch_checked < 1) {
    std::fprintf(stderr, "usage: gptoss-cuda-layer-check --model DIR [--prompts L,L,..] [--decode N] [--dense N] "
                         "[--spread N] [--batch N] [--batch-prompt N] [--batch-checked N] [--threads N] [--seed N] "
                         "[--reference-only]\n");
    return 2;
  }
  std::printf("gptoss-cuda-layer-check %s seed %llu\n", model.c_str(), static_cast<unsigned long long>(seed));
  try {
    const ModelConfig config = load_model_config(model);
    const Weights weights = load_weights(model, config);
    std::unique_ptr<ModelRunner> runner;
    if (!reference_only) runner = make_cuda_runner(model);
    ThreadPool pool(threads);
    const LayerCheckTolerances tol;
    TeacherForcedCheck check(config, weights, &pool, tol);
    Random rng(seed);
    auto random_tokens = [&](int32_t n) {
      std::vector<int32_t> t(n);
      for (int32_t& x : t) x = rng.integer(0, config.vocab_size - 1);
      return t;
    };
    // Runs one batch on KV blocks of its own.
    auto run = [&](const std::string& name, const std::vector<LayerCheckSequence>& batch) {
      int32_t longest = 0, checked = 0;
      for (const LayerCheckSequence& s : batch) {
        longest = std::max(longest, static_cast<int32_t>(s.tokens.size()));
        checked += static_cast<int32_t>(s.checked.size());
      }
      const PlanBuilder blocks(static_cast<int32_t>(batch.size()), longest, 16, seed);
      std::printf("%s: %zu sequences, %d positions checked\n", name.c_str(), batch.size(), checked);
      const auto t0 = std::chrono::steady_clock::now();
      if (runner) {
        CudaRunner& gpu = static_cast<CudaRunner&>(*runner);  // make_cuda_runner builds a CudaRunner
        gpu.allocate_kv_cache(blocks.kv_shape());
        CudaLayers layers(gpu, blocks);
        check.run(name, batch, layers);
      } else {
        ReferenceLayers layers(check);
        check.run(name, batch, layers);
      }
      std::printf("%s checked in %.1f s\n", name.c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    };

    // The prompts together in one step, then `decode` steps of all of them.
    std::vector<LayerCheckSequence> mixed;
    for (int32_t p : prompts) {
      LayerCheckSequence s{random_tokens(p + decode), p, {}};
      s.checked = layer_check_positions(p, p + decode, config.sliding_window, dense, spread);
      mixed.push_back(std::move(s));
    }
    run("prompts", mixed);
    // Many short sequences decoding together: the large-batch decode paths
    // (tiles, tensor-core attention); the reference checks a few of them.
    if (batch_seqs > 0) {
      std::vector<LayerCheckSequence> many;
      for (int32_t i = 0; i < batch_seqs; ++i) {
        LayerCheckSequence s{random_tokens(batch_prompt + 2), batch_prompt, {}};
        if (i % std::max(1, batch_seqs / batch_checked) == 0) s.checked = {batch_prompt - 1, batch_prompt, batch_prompt + 1};
        many.push_back(std::move(s));
      }
      run("decode batch " + std::to_string(batch_seqs), many);
    }

    const LayerCheckSummary& r = check.summary();
    print_worst("attention output", r.attn, tol.attn);
    print_worst("router logits", r.router_logits, tol.router_logits);
    print_worst("moe output", r.moe, tol.moe);
    print_worst("residual", r.residual, tol.residual);
    std::printf("layer check router choices: %lld rows, %lld near ties (k-th and (k+1)-th logits within bf16 "
                "rounding), %lld within the measured router-logit error, %lld mismatches\n",
                static_cast<long long>(r.router_rows), static_cast<long long>(r.router_near_ties),
                static_cast<long long>(r.router_error_ties), static_cast<long long>(r.router_mismatches));
    if (std::isinf(r.worst_ratio))
      std::printf("layer check worst layer %d: %s\n", r.worst_layer, r.worst_what.c_str());
    else
      std::printf("layer check worst layer %d: %s at %.2f of its tolerance\n", r.worst_layer, r.worst_what.c_str(),
                  r.worst_ratio);
    std::printf("layer checks: %d layer runs failed of %d  %s\n", r.failures,
                (batch_seqs > 0 ? 2 : 1) * config.num_layers, r.failures ? "FAIL" : "PASS");
    return r.failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gptoss-cuda-layer-check: %s\n", e.what());
    return 1;
  }
}
