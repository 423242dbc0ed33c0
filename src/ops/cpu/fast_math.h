// Vectorisable float math for the CPU kernels. libm's expf/erff are scalar calls that stop the
// compiler from vectorising a loop; these are plain arithmetic on floats and ints, so loops over
// them compile to AVX-512/AVX2 code. Accuracy (checked in tests/test_fast_math.cpp):
//   exp_fast: relative error < 2e-7 on [-87, 88] (Cephes-style: 2^n · polynomial on [-ln2/2, ln2/2]);
//   erf_fast: absolute error < 5e-7 (Abramowitz & Stegun 7.1.26, 1.5e-7, plus float32 rounding of its
//             polynomial and exp; measured 4.6e-7).
#pragma once

#ifdef __AVX512F__
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and trip -Wmaybe-uninitialized when
// inlined (GCC bug 105593, fixed in 13); the warning is about the header's lines, so it is silenced
// around its inclusion (this header is therefore included before anything that might include it).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include <cstdint>
#include <cmath>
#include <cstring>

namespace mf::fastmath {

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

// exp_fast's constants, shared with the AVX-512 version (exp16) so that both compute one function.
namespace expc {
constexpr float kLo = -87.3f, kHi = 88.3f;  // clamp: 2^n stays a normal float
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kRound = 12582912.0f;  // 1.5 · 2^23: adding and subtracting it rounds to an integer
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln 2 in two parts, to keep r exact
constexpr float kP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                         4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
}  // namespace expc

inline float exp_fast(float x) {
  x = x < expc::kLo ? expc::kLo : x;
  x = x > expc::kHi ? expc::kHi : x;
  // n = round(x / ln 2) without a branch, so the loop vectorises; r = x - n ln 2.
  const float n = (x * expc::kLog2e + expc::kRound) - expc::kRound;
  float r = x - n * expc::kLn2Hi;
  r = r - n * expc::kLn2Lo;
  float p = expc::kP[0];
  p = p * r + expc::kP[1];
  p = p * r + expc::kP[2];
  p = p * r + expc::kP[3];
  p = p * r + expc::kP[4];
  p = p * r + expc::kP[5];
  p = p * r * r + r + 1.0f;
  return p * bits_to_float((static_cast<int32_t>(n) + 127) << 23);
}

#ifdef __AVX512F__
// exp_fast on 16 lanes with AVX-512 intrinsics, for kernels that need masked tails (the inference
// softmax). Same constants and the same order of operations.
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(expc::kLo)), _mm512_set1_ps(expc::kHi));
  const __m512 round = _mm512_set1_ps(expc::kRound);
  const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(expc::kLog2e), round), round);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(expc::kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(expc::kLn2Lo), r);
  __m512 p = _mm512_set1_ps(expc::kP[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(expc::kP[i]));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}
#endif

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
