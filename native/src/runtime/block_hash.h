// BlockHash: the identity of one full KV block for the prefix cache.
//
// A block's hash chains over everything its KV depends on: the hash of the
// block before it (so equal hashes mean equal whole prefixes, not just equal
// blocks) and its own tokens. The chain starts from the request's cache salt
// (the tenant), so two salts never produce the same chain and one tenant can
// neither hit nor time another tenant's cached prompt. SHA-256 (truncated to
// 128 bits) rather than a fast hash: a tenant who could craft a collision with
// another tenant's block would poison that tenant's answers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gptoss {

struct BlockHash {
  uint64_t hi = 0;
  uint64_t lo = 0;
  bool operator==(const BlockHash& o) const { return hi == o.hi && lo == o.lo; }
};

struct BlockHashOf {
  size_t operator()(const BlockHash& h) const { return static_cast<size_t>(h.lo); }
};

// The parent of a request's first block: a hash of its cache salt.
BlockHash salt_root(const std::string& cache_salt);

// The hash of a block holding `tokens[0, n)` whose preceding block hashes to `parent`.
BlockHash chain_block(const BlockHash& parent, const int32_t* tokens, int32_t n);

// Extends `hashes` (the chain from `root` over `tokens`) to every full block
// of `block_size` tokens among the first `n_positions` tokens.
void extend_block_hashes(std::vector<BlockHash>& hashes, const BlockHash& root, const std::vector<int32_t>& tokens,
                         int32_t n_positions, int32_t block_size);

}  // namespace gptoss
