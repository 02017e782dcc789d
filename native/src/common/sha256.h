// SHA-256 (FIPS 180-4), for content keys that must not collide even when an
// adversary picks the input (prefix-cache block hashes across tenants).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace gptoss {

class Sha256 {
 public:
  using Digest = std::array<uint8_t, 32>;

  Sha256();
  Sha256& update(const void* data, size_t n);
  // Pads and returns the digest; the object must not be updated afterwards.
  Digest finish();

 private:
  void compress(const uint8_t* block);

  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace gptoss
