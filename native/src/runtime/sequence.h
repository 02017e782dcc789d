// Sequence: one request's state inside the runtime, shared by the scheduler
// (what to compute next) and the engine (sampling, finishing).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/block_hash.h"
#include "runtime/request.h"

namespace gptoss {

struct Sequence {
  Sequence(uint64_t id, Request request)
      : id(id),
        fairness_key(std::move(request.fairness_key)),
        sampling(std::move(request.sampling)),
        tokens(std::move(request.prompt)),
        num_prompt_tokens(static_cast<int32_t>(tokens.size())),
        hash_root(salt_root(request.cache_salt)) {}

  const uint64_t id;
  const std::string fairness_key;
  const SamplingParams sampling;
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  const int32_t num_prompt_tokens;
  // Positions whose K/V are in the cache. Tokens from here to the end still
  // need a forward pass (the whole prompt at first, then the last sampled token;
  // everything again after a preemption).
  int32_t num_computed = 0;
  std::unordered_map<int32_t, int32_t> generated_counts;  // token -> occurrences, for penalties
  // Prefix cache: the chained hash of each full block hashed so far (from
  // the cache salt), and the prompt tokens the first admission found cached
  // (-1 until admitted; what usage reports as cached_tokens).
  const BlockHash hash_root;
  std::vector<BlockHash> block_hashes;
  int32_t num_cached_prompt_tokens = -1;
  // Constrained decoding: when the sequence started waiting for the token
  // mask of the position it samples next (steps whose sample it could not use
  // included); the epoch while it is not waiting.
  std::chrono::steady_clock::time_point mask_wait_since{};

  int32_t length() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_generated() const { return length() - num_prompt_tokens; }
  int32_t num_pending() const { return length() - num_computed; }

  // Hashes every full block among the first `n_positions` tokens.
  void hash_blocks(int32_t n_positions, int32_t block_size) {
    extend_block_hashes(block_hashes, hash_root, tokens, n_positions, block_size);
  }

  void append(int32_t token) {
    tokens.push_back(token);
    ++generated_counts[token];
  }
};

}  // namespace gptoss
