#include "runtime/block_hash.h"

#include "common/sha256.h"

namespace gptoss {
namespace {

BlockHash truncate(const Sha256::Digest& d) {
  BlockHash h;
  for (int i = 0; i < 8; ++i) {
    h.hi = h.hi << 8 | d[i];
    h.lo = h.lo << 8 | d[8 + i];
  }
  return h;
}

// Fixed-width little-endian bytes, so the hash is the same on every host.
void put_u64(Sha256& sha, uint64_t v) {
  uint8_t bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(v >> (8 * i));
  sha.update(bytes, sizeof bytes);
}

}  // namespace

BlockHash salt_root(const std::string& cache_salt) {
  // A domain tag keeps a root from ever equalling a block hash.
  static constexpr char kTag[] = "gptoss-prefix-cache-root-v1";
  Sha256 sha;
  sha.update(kTag, sizeof kTag);
  put_u64(sha, cache_salt.size());
  sha.update(cache_salt.data(), cache_salt.size());
  return truncate(sha.finish());
}

BlockHash chain_block(const BlockHash& parent, const int32_t* tokens, int32_t n) {
  Sha256 sha;
  put_u64(sha, parent.hi);
  put_u64(sha, parent.lo);
  put_u64(sha, static_cast<uint64_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    const uint32_t t = static_cast<uint32_t>(tokens[i]);
    const uint8_t bytes[4] = {static_cast<uint8_t>(t), static_cast<uint8_t>(t >> 8), static_cast<uint8_t>(t >> 16),
                              static_cast<uint8_t>(t >> 24)};
    sha.update(bytes, sizeof bytes);
  }
  return truncate(sha.finish());
}

void extend_block_hashes(std::vector<BlockHash>& hashes, const BlockHash& root, const std::vector<int32_t>& tokens,
                         int32_t n_positions, int32_t block_size) {
  const size_t full = static_cast<size_t>(n_positions / block_size);
  while (hashes.size() < full) {
    const BlockHash& parent = hashes.empty() ? root : hashes.back();
    hashes.push_back(chain_block(parent, tokens.data() + hashes.size() * block_size, block_size));
  }
}

}  // namespace gptoss
