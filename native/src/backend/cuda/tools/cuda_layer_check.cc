// gptoss-cuda-layer-check --model DIR [--prompts 100,1000,4500] [--decode 4]
//                         [--dense 128] [--spread 12] [--threads N] [--seed N]
//
// The teacher-forced per-layer check (backend/layer_check.h) of the CUDA
// runner against the CPU reference, every layer of the checkpoint: for each
// prompt length, a random prompt run as one chunk (the prompt kernels) and
// --decode single-token steps after it (the decode kernels), each CUDA layer
// fed the reference's residual stream. Sequences of up to --dense positions
// are checked at every position; longer ones at the sampled positions of
// layer_check_positions (first rows, the sliding window's edge, --spread rows
// across the prompt, the prompt's tail, every decode step), which keeps the
// CPU's share to K/V projections over the whole prompt and full layers on
// the sample. Prints one line per layer and sequence, then the worst layer.
// Exit status 1 when an output passes its tolerance or an expert choice
// differs away from a near tie.
#include <chrono>
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

// The CUDA runner's layers over one sequence of the KV pools (`seq`).
class CudaLayers final : public LayerUnderTest {
 public:
  CudaLayers(CudaRunner& runner, const PlanBuilder& blocks, int32_t seq, const std::vector<int32_t>& tokens)
      : runner_(runner), blocks_(blocks), seq_(seq), tokens_(tokens) {}

  void run_layer(int32_t layer, const std::vector<float>& x, int32_t n_prompt, LayerOutputs& out) override {
    const size_t H = runner_.config().hidden_size;
    BatchPlan prompt;
    blocks_.add(prompt, seq_, 0, std::vector<int32_t>(tokens_.begin(), tokens_.begin() + n_prompt), false);
    runner_.forward_layer(prompt, layer, std::vector<float>(x.begin(), x.begin() + n_prompt * H), out);
    LayerOutputs step;
    for (int32_t pos = n_prompt; pos < static_cast<int32_t>(tokens_.size()); ++pos) {
      BatchPlan decode;
      blocks_.add(decode, seq_, pos, {tokens_[pos]}, false);
      runner_.forward_layer(decode, layer, std::vector<float>(x.begin() + pos * H, x.begin() + (pos + 1) * H), step);
      out.append(step);
    }
  }

 private:
  CudaRunner& runner_;
  const PlanBuilder& blocks_;
  int32_t seq_;
  const std::vector<int32_t>& tokens_;
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
  std::vector<int32_t> prompts = {100, 1000, 4500};
  int32_t decode = 4, dense = 128, spread = 12, threads = 0;
  uint64_t seed = std::chrono::steady_clock::now().time_since_epoch().count();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--model") model = argv[i + 1];
    else if (a == "--prompts") prompts = parse_lengths(argv[i + 1]);
    else if (a == "--decode") decode = std::atoi(argv[i + 1]);
    else if (a == "--dense") dense = std::atoi(argv[i + 1]);
    else if (a == "--spread") spread = std::atoi(argv[i + 1]);
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 10);
  }
  if (model.empty() || prompts.empty() || decode < 0) {
    std::fprintf(stderr, "usage: gptoss-cuda-layer-check --model DIR [--prompts L,L,..] [--decode N] [--dense N] "
                         "[--spread N] [--threads N] [--seed N]\n");
    return 2;
  }
  std::printf("gptoss-cuda-layer-check %s seed %llu\n", model.c_str(), static_cast<unsigned long long>(seed));
  try {
    const ModelConfig config = load_model_config(model);
    const Weights weights = load_weights(model, config);
    auto runner = make_cuda_runner(model);
    CudaRunner& gpu = static_cast<CudaRunner&>(*runner);  // make_cuda_runner builds a CudaRunner
    ThreadPool pool(threads);
    const LayerCheckTolerances tol;
    TeacherForcedCheck check(config, weights, &pool, tol);

    int32_t longest = 0;
    for (int32_t p : prompts) longest = std::max(longest, p + decode);
    const PlanBuilder blocks(static_cast<int32_t>(prompts.size()), longest, 16, seed);
    gpu.allocate_kv_cache(blocks.kv_shape());
    Random rng(seed);
    for (size_t s = 0; s < prompts.size(); ++s) {
      LayerCheckSequence seq;
      seq.n_prompt = prompts[s];
      for (int32_t i = 0; i < prompts[s] + decode; ++i) seq.tokens.push_back(rng.integer(0, config.vocab_size - 1));
      seq.checked = layer_check_positions(seq.n_prompt, prompts[s] + decode, config.sliding_window, dense, spread);
      std::printf("sequence %zu: prompt %d + %d decode steps, %zu positions checked\n", s, prompts[s], decode,
                  seq.checked.size());
      const auto t0 = std::chrono::steady_clock::now();
      CudaLayers layers(gpu, blocks, static_cast<int32_t>(s), seq.tokens);
      check.run("len " + std::to_string(prompts[s]), seq, layers);
      std::printf("sequence %zu checked in %.1f s\n", s,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }

    const LayerCheckSummary& r = check.summary();
    print_worst("attention output", r.attn, tol.attn);
    print_worst("router logits", r.router_logits, tol.router_logits);
    print_worst("moe output", r.moe, tol.moe);
    print_worst("residual", r.residual, tol.residual);
    std::printf("layer check router choices: %lld rows, %lld near ties (k-th and (k+1)-th logits within bf16 "
                "rounding), %lld mismatches\n",
                static_cast<long long>(r.router_rows), static_cast<long long>(r.router_near_ties),
                static_cast<long long>(r.router_mismatches));
    std::printf("layer check worst layer %d: %s at %.2f of its tolerance\n", r.worst_layer, r.worst_what.c_str(),
                r.worst_ratio);
    std::printf("layer checks: %d layer runs failed of %zu  %s\n", r.failures, prompts.size() * config.num_layers,
                r.failures ? "FAIL" : "PASS");
    return r.failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gptoss-cuda-layer-check: %s\n", e.what());
    return 1;
  }
}
