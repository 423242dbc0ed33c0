// The taps of torch's bicubic interpolation along one axis (aten/src/ATen/native/UpSample.h:
// align_corners=False, scale = in / out, source = scale·(o + 0.5) − 0.5 without clamping, cubic
// convolution with A = −0.75, the four taps' indices clamped to the border). Shared by the reference
// and the CPU kernels so that both read the same weights.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace mf {

struct BicubicTaps {
  std::vector<int64_t> index;  // [out, 4]
  std::vector<double> weight;  // [out, 4]
};

inline BicubicTaps bicubic_taps(int64_t in, int64_t out) {
  constexpr double A = -0.75;
  auto near = [](double x) { return ((A + 2) * x - (A + 3)) * x * x + 1; };       // |x| <= 1
  auto far = [](double x) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; };  // 1 < |x| < 2
  BicubicTaps t;
  t.index.resize(static_cast<size_t>(out * 4));
  t.weight.resize(static_cast<size_t>(out * 4));
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  for (int64_t o = 0; o < out; ++o) {
    const double src = scale * (static_cast<double>(o) + 0.5) - 0.5;
    const double base = std::floor(src);
    const double f = src - base;
    const double w[4] = {far(f + 1), near(f), near(1 - f), far(2 - f)};
    for (int k = 0; k < 4; ++k) {
      const auto i = static_cast<int64_t>(base) - 1 + k;
      t.index[static_cast<size_t>(o * 4 + k)] = std::clamp<int64_t>(i, 0, in - 1);
      t.weight[static_cast<size_t>(o * 4 + k)] = w[k];
    }
  }
  return t;
}

}  // namespace mf
