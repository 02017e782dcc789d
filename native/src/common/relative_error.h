// The relative error every numerical check reports.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace gptoss {

// ||out - ref|| / ||ref||; NaN or infinity anywhere in `out` gives infinity.
inline double relative_error(const std::vector<float>& out, const std::vector<float>& ref) {
  if (out.size() != ref.size()) return INFINITY;
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    diff += (double(out[i]) - ref[i]) * (double(out[i]) - ref[i]);
    norm += double(ref[i]) * ref[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

}  // namespace gptoss
