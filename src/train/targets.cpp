#include "train/targets.h"

#include "core/error.h"

namespace mf {

Tensor smoothed_targets(const std::vector<int64_t>& labels, int64_t classes, double smoothing) {
  const auto B = static_cast<int64_t>(labels.size());
  const float off = static_cast<float>(smoothing / static_cast<double>(classes));
  const float on = static_cast<float>(1.0 - smoothing) + off;
  Tensor t = Tensor::full({B, classes}, off);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t y = labels[static_cast<size_t>(b)];
    MF_CHECK(y >= 0 && y < classes, "label {} is outside [0, {})", y, classes);
    t.data()[b * classes + y] = on;
  }
  return t;
}

}  // namespace mf
