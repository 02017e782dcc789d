// PacedRunner: a runner that computes nothing and takes a GPU's time. Every
// step lasts step_us, plus prefill_us_per_token for each prompt token it
// carries beyond a chunk's first, and samples ordinary text tokens. It lets a
// host without a GPU (the dev VM, CI) run the whole stack with an engine that
// is busy the way a GPU engine is: the engine thread waits out each step while
// JavaScript, Redis and the gateway run, so a latency breakdown of everything
// around the engine (shared/timeline.ts) can be taken anywhere.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend/model_runner.h"

namespace gptoss {

struct PacedTiming {
  int32_t step_us = 4000;              // one decode step (an H100's batch-1 step of the 20b model)
  int32_t prefill_us_per_token = 35;   // each further prompt token of a step (≈ 40 ms for 1 024)
};

// The model's shape comes from model_dir's config.json; no weights are read.
std::unique_ptr<ModelRunner> make_paced_runner(const std::string& model_dir, const PacedTiming& timing);

}  // namespace gptoss
