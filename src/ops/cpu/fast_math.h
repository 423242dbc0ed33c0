// Vectorisable float math for the CPU kernels. libm's expf/erff are scalar calls that stop the
// compiler from vectorising a loop; these are plain arithmetic on floats and ints, so loops over
// them compile to AVX-512/AVX2 code. Accuracy (checked in tests/test_fast_math.cpp):
//   exp_fast: relative error < 2e-7 on [-87, 88] (Cephes-style: 2^n · polynomial on [-ln2/2, ln2/2]);
//   erf_fast: absolute error < 5e-7 (Abramowitz & Stegun 7.1.26, 1.5e-7, plus float32 rounding of its
//             polynomial and exp; measured 4.6e-7).
#pragma once

#include <cstdint>
#include <cmath>
#include <cstring>

namespace mf::fastmath {

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

inline float exp_fast(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  // n = round(x / ln 2) by adding and subtracting 1.5 · 2^23 (no branch, so the loop vectorises);
  // r = x - n ln 2 in two parts to keep r exact.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * bits_to_float((static_cast<int32_t>(n) + 127) << 23);
}

inline float erf_fast(float x) {
  const float ax = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float y = 1.0f - poly * exp_fast(-ax * ax);
  return x < 0 ? -y : y;
}

inline float gelu_fast(float x) { return 0.5f * x * (1.0f + erf_fast(x * 0.70710678118654752f)); }
inline float silu_fast(float x) { return x / (1.0f + exp_fast(-x)); }

}  // namespace mf::fastmath
