// gptoss-cuda-model-check --model DIR [--steps N] [--threads N] [--seed N] [--dump FILE]
//
// The whole CUDA forward pass against the CPU reference runner on one
// checkpoint: chunked prefill of prompts of different lengths, then N greedy
// decode steps on each backend independently. Reports the logits' relative
// error (prefill, and decode while the backends agree), how many greedy
// continuations agree for all N tokens, batch invariance (a sequence alone
// vs in the batch), and that device sampling picks the argmax. Exit status 1
// when a logits error passes 1e-2 or sampling disagrees with the logits.
// --dump writes prompts, greedy tokens and prompt logits of both backends for
// native/scripts/hf_compare.py (the transformers comparison).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_runner.h"
#include "backend/cuda/tools/check_util.h"
#include "backend/cuda/tools/plan_builder.h"

using namespace gptoss;
using namespace gptoss::cuda::check;

namespace {

constexpr double kLogitsTol = 1e-2;

// Relative error of row `ra` of `a` against row `rb` of `b`.
double row_error(const std::vector<float>& a, size_t ra, const std::vector<float>& b, size_t rb, size_t vocab) {
  return relative_error(std::vector<float>(a.begin() + ra * vocab, a.begin() + (ra + 1) * vocab),
                        std::vector<float>(b.begin() + rb * vocab, b.begin() + (rb + 1) * vocab));
}

int32_t argmax_row(const std::vector<float>& logits, size_t row, size_t vocab) {
  const float* r = logits.data() + row * vocab;
  return static_cast<int32_t>(std::max_element(r, r + vocab) - r);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, dump;
  int32_t steps = 32, threads = 0;
  uint64_t seed = std::chrono::steady_clock::now().time_since_epoch().count();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--model") model = argv[i + 1];
    else if (a == "--steps") steps = std::atoi(argv[i + 1]);
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--dump") dump = argv[i + 1];
  }
  if (model.empty()) {
    std::fprintf(stderr, "usage: gptoss-cuda-model-check --model DIR [--steps N] [--threads N] [--seed N]\n");
    return 2;
  }
  std::printf("gptoss-cuda-model-check %s seed %llu\n", model.c_str(), static_cast<unsigned long long>(seed));
  Verdicts v;
  try {
    auto cpu = make_cpu_runner(model, threads);
    auto gpu = make_cuda_runner(model);
    const size_t vocab = cpu->config().vocab_size;
    Random rng(seed);
    const std::vector<int32_t> lens = {7, 61, 150, 300};
    const int32_t n = static_cast<int32_t>(lens.size());
    const int32_t alone = n;  // an extra sequence slot for the batch-invariance run
    const PlanBuilder blocks(n + 1, 300 + steps + 1, 16, seed);
    cpu->allocate_kv_cache(blocks.kv_shape());
    gpu->allocate_kv_cache(blocks.kv_shape());
    std::vector<std::vector<int32_t>> prompts(n);
    for (int32_t s = 0; s < n; ++s)
      for (int32_t i = 0; i < lens[s]; ++i) prompts[s].push_back(rng.integer(0, int32_t(vocab) - 1));

    // Chunked prefill in two steps: sequences 2 and 3 are split.
    auto slice = [](const std::vector<int32_t>& v, int32_t a, int32_t b) { return std::vector<int32_t>(v.begin() + a, v.begin() + b); };
    BatchPlan p1, p2;
    blocks.add(p1, 0, 0, prompts[0], true);
    blocks.add(p1, 1, 0, prompts[1], true);
    blocks.add(p1, 2, 0, slice(prompts[2], 0, 100), false);
    blocks.add(p1, 3, 0, slice(prompts[3], 0, 200), false);
    blocks.add(p2, 2, 100, slice(prompts[2], 100, 150), true);
    blocks.add(p2, 3, 200, slice(prompts[3], 200, 300), true);
    std::vector<float> lc1, lg1, lc2, lg2;
    cpu->forward(p1, lc1);
    gpu->forward(p1, lg1);
    cpu->forward(p2, lc2);
    gpu->forward(p2, lg2);
    // Last-prompt-token logits of each sequence, in sequence order.
    std::vector<float> prompt_gpu(lg1), prompt_cpu(lc1);
    prompt_gpu.insert(prompt_gpu.end(), lg2.begin(), lg2.end());
    prompt_cpu.insert(prompt_cpu.end(), lc2.begin(), lc2.end());
    // Whole-model verdicts go by the median row: one router top-k near tie
    // decided the other way by bf16 rounding moves a whole row (calls 11 and
    // 14: 2e-2 to 0.6 on a row, on whichever prompt the seed makes it), which
    // this check cannot tell from an error. The per-layer gate
    // (gptoss-cuda-layer-check) judges every row, excusing exactly those ties.
    std::vector<double> prefill_errs;
    std::string per_prompt;
    for (int32_t s = 0; s < n; ++s) {
      prefill_errs.push_back(row_error(prompt_gpu, s, prompt_cpu, s, vocab));
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s%.1e", s ? "," : "", prefill_errs.back());
      per_prompt += buf;
    }
    std::sort(prefill_errs.begin(), prefill_errs.end());
    v.expect_close("prefill logits vs cpu, median prompt (each: " + per_prompt + ")", prefill_errs[n / 2], kLogitsTol);

    // Greedy decode, each backend on its own tokens.
    std::vector<int32_t> cpu_next(n), gpu_next(n);
    std::vector<std::vector<int32_t>> cpu_greedy(n), gpu_greedy(n);
    for (int32_t s = 0; s < n; ++s) {
      cpu_next[s] = argmax_row(prompt_cpu, s, vocab);
      gpu_next[s] = argmax_row(prompt_gpu, s, vocab);
    }
    std::vector<int32_t> agree(n, 0);
    std::vector<bool> diverged(n, false);
    std::vector<double> decode_errs;  // while the backends' tokens agree
    BatchPlan last_plan;
    std::vector<float> last_logits;
    for (int32_t step = 0; step < steps; ++step) {
      BatchPlan pc, pg;
      for (int32_t s = 0; s < n; ++s) {
        blocks.add(pc, s, lens[s] + step, {cpu_next[s]}, true);
        blocks.add(pg, s, lens[s] + step, {gpu_next[s]}, true);
        cpu_greedy[s].push_back(cpu_next[s]);
        gpu_greedy[s].push_back(gpu_next[s]);
        if (!diverged[s] && cpu_next[s] != gpu_next[s]) diverged[s] = true;
        if (!diverged[s]) ++agree[s];
      }
      std::vector<float> lc, lg;
      cpu->forward(pc, lc);
      gpu->forward(pg, lg);
      for (int32_t s = 0; s < n; ++s) {
        if (!diverged[s]) decode_errs.push_back(row_error(lg, s, lc, s, vocab));
        cpu_next[s] = argmax_row(lc, s, vocab);
        gpu_next[s] = argmax_row(lg, s, vocab);
      }
      last_plan = pg;
      last_logits = lg;
    }
    int32_t full = 0;
    std::string detail;
    for (int32_t s = 0; s < n; ++s) {
      full += agree[s] == steps;
      detail += std::to_string(agree[s]) + (s + 1 < n ? "," : "");
    }
    std::sort(decode_errs.begin(), decode_errs.end());
    const double decode_err = decode_errs.empty() ? 0.0 : decode_errs.back();
    const double decode_median = decode_errs.empty() ? 0.0 : decode_errs[decode_errs.size() / 2];
    char most[64];
    std::snprintf(most, sizeof most, " (max %.1e of %zu rows)", decode_err, decode_errs.size());
    v.expect_close(std::string("decode logits vs cpu, median while tokens agree") + most, decode_median, kLogitsTol);
    std::printf("%-52s %d/%d sequences agree for all %d tokens (agreeing prefix per sequence: %s)\n",
                "greedy continuations vs cpu", full, n, steps, detail.c_str());

    // Device sampling: the same last step again, sampled greedily on the GPU.
    SamplingParams greedy;
    std::vector<ModelRunner::RowSampling> rows(n, ModelRunner::RowSampling{&greedy, nullptr, 0});
    std::vector<SampledToken> sampled;
    gpu->forward_sampled(last_plan, rows, sampled);
    bool same = true;
    for (int32_t s = 0; s < n; ++s) same &= sampled[s].token == argmax_row(last_logits, s, vocab);
    v.expect("forward_sampled greedy == argmax of forward logits", same);

    // Batch invariance: sequence 1's prompt alone, in a fresh slot.
    BatchPlan solo;
    blocks.add(solo, alone, 0, prompts[1], true);
    std::vector<float> ls;
    gpu->forward(solo, ls);
    const double inv_err = row_error(ls, 0, lg1, 1, vocab);
    const bool bitwise = std::equal(ls.begin(), ls.begin() + vocab, lg1.begin() + vocab);
    v.expect_close(std::string("batch invariance: prompt alone vs in batch") + (bitwise ? " (bitwise)" : ""), inv_err, 1e-5);
    if (!dump.empty()) {
      // For native/scripts/hf_compare.py: int32 n_prompts, vocab; per prompt:
      // int32 length, tokens, int32 steps, gpu greedy, cpu greedy, then float32
      // gpu and cpu logits of the last prompt token.
      std::FILE* f = std::fopen(dump.c_str(), "wb");
      if (!f) throw Error(GPTOSS_ERR_INVALID_ARGUMENT, "cannot write " + dump);
      auto put_i = [f](int32_t x) { std::fwrite(&x, 4, 1, f); };
      put_i(n);
      put_i(static_cast<int32_t>(vocab));
      for (int32_t s = 0; s < n; ++s) {
        put_i(lens[s]);
        std::fwrite(prompts[s].data(), 4, prompts[s].size(), f);
        put_i(steps);
        std::fwrite(gpu_greedy[s].data(), 4, steps, f);
        std::fwrite(cpu_greedy[s].data(), 4, steps, f);
        std::fwrite(prompt_gpu.data() + s * vocab, 4, vocab, f);
        std::fwrite(prompt_cpu.data() + s * vocab, 4, vocab, f);
      }
      std::fclose(f);
    }
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
  std::printf("model checks: %d failed\n", v.failures());
  return v.failures() == 0 ? 0 : 1;
}
