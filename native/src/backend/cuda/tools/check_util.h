// Helpers shared by the CUDA check tools: device round trips, random data
// and the relative-error verdicts they print.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "common/bf16.h"
#include "common/relative_error.h"

namespace gptoss::cuda::check {

template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& host) {
  DeviceBuffer<T> d(host.size());
  if (!host.empty())
    GPTOSS_CUDA_CHECK(cudaMemcpy(d.get(), host.data(), d.bytes(), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
std::vector<T> to_host(const DeviceBuffer<T>& d, size_t count) {
  GPTOSS_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> host(count);
  if (count) GPTOSS_CUDA_CHECK(cudaMemcpy(host.data(), d.get(), count * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

// A device buffer filled with NaN bit patterns, so unwritten outputs fail.
template <typename T>
DeviceBuffer<T> poisoned(size_t count) {
  DeviceBuffer<T> d(count);
  GPTOSS_CUDA_CHECK(cudaMemset(d.get(), 0xff, d.bytes()));
  return d;
}

class Random {
 public:
  explicit Random(uint64_t seed) : gen_(seed) {}
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen_); }
  int32_t integer(int32_t lo, int32_t hi) { return std::uniform_int_distribution<int32_t>(lo, hi)(gen_); }
  // Floats that are exact bf16 values, so both sides see the same inputs.
  std::vector<float> bf16_floats(size_t n, float scale) {
    std::vector<float> v(n);
    for (float& x : v) x = bf16_to_float(float_to_bf16(uniform(-scale, scale)));
    return v;
  }
  std::vector<uint8_t> bytes(size_t n, int lo, int hi) {
    std::vector<uint8_t> v(n);
    if (lo == 0 && hi == 255) {  // any byte (the MXFP4 codes, 400 MB): eight from each 64-bit draw
      for (size_t i = 0; i < n; i += 8) {
        const uint64_t draw = gen_();
        std::memcpy(v.data() + i, &draw, std::min<size_t>(8, n - i));
      }
      return v;
    }
    for (uint8_t& b : v) b = static_cast<uint8_t>(integer(lo, hi));
    return v;
  }
  std::mt19937_64& engine() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

inline std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

using gptoss::relative_error;

// Prints one verdict line and counts failures.
class Verdicts {
 public:
  bool expect_close(const std::string& name, double err, double tol) {
    const bool ok = err <= tol;
    std::printf("%-52s rel_err %.3e  tol %.0e  %s\n", name.c_str(), err, tol, ok ? "PASS" : "FAIL");
    failures_ += !ok;
    return ok;
  }
  bool expect(const std::string& name, bool ok, const std::string& detail = "") {
    std::printf("%-52s %s  %s\n", name.c_str(), detail.c_str(), ok ? "PASS" : "FAIL");
    failures_ += !ok;
    return ok;
  }
  int failures() const { return failures_; }

 private:
  int failures_ = 0;
};

}  // namespace gptoss::cuda::check
