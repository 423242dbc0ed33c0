// Activation values and derivatives on the device, as the reference computes them
// (ops/ref/elementwise.cpp): in double where the reference's bits are the bar, and GELU's and SiLU's
// in float where double made the kernels compute-bound. Shared by backward_kernels.cu (activation,
// StarReLU) and glu_backward.cu (the gated product).
#pragma once

#include <cuda_runtime.h>

#include "ops/cuda/backward_kernels.h"

namespace mf::cuda::backward::detail {

// ---- activations, as the reference computes them (ops/ref/elementwise.cpp), in double ---------
constexpr double kSqrtHalf = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.3989422804014327;

// StarReLU's scalars, from the device when a GPU run keeps them there.
__device__ __forceinline__ float act_scale(const Act& a) { return a.scale_p ? *a.scale_p : a.scale; }
__device__ __forceinline__ float act_bias(const Act& a) { return a.bias_p ? *a.bias_p : a.bias; }

// apply_activation: the value rounded to float, as the reference's glu backward uses it.
__device__ inline float act_value(const Act& a, float x) {
  const double v = x;
  switch (a.kind) {
    case 0: return x;
    case 1: return static_cast<float>(0.5 * v * (1.0 + erf(v * kSqrtHalf)));
    case 2: {
      const double r = v > 0 ? v : 0;
      return static_cast<float>(act_scale(a) * r * r + act_bias(a));
    }
    case 3: {
      const double r = v > 0 ? v : 0;
      return static_cast<float>(r * r);
    }
    case 4: return x > 0 ? x : 0.f;
    case 5: return static_cast<float>(v / (1.0 + exp(-v)));
    case 6: {
      const float t = a.threshold;
      return x > t ? x - t : x < -t ? x + t : 0.f;
    }
  }
  return x;
}

// activation_derivative
__device__ inline double act_derivative(const Act& a, double x) {
  switch (a.kind) {
    case 0: return 1.0;
    case 1: {
      const double cdf = 0.5 * (1.0 + erf(x * kSqrtHalf));
      const double pdf = exp(-0.5 * x * x) * kInvSqrt2Pi;
      return cdf + x * pdf;
    }
    case 2: return x > 0 ? 2.0 * act_scale(a) * x : 0.0;
    case 3: return x > 0 ? 2.0 * x : 0.0;
    case 4: return x > 0 ? 1.0 : 0.0;
    case 5: {
      const double s = 1.0 / (1.0 + exp(-x));
      return s * (1.0 + x * (1.0 - s));
    }
    case 6: return fabs(x) > a.threshold ? 1.0 : 0.0;
  }
  return 1.0;
}

// GELU's and SiLU's derivatives in float (erff, expf: a few ulp) — in double they made the
// activation backward compute-bound (10 % of a poolformer_s12 training step's kernel time); the rest
// as above. The product with dy is one float rounding, as before.
__device__ inline float act_derivative_f(const Act& a, float x) {
  switch (a.kind) {
    case 1: {
      const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
      const float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
      return cdf + x * pdf;
    }
    case 5: {
      const float s = 1.f / (1.f + expf(-x));
      return s * (1.f + x * (1.f - s));
    }
    default: return static_cast<float>(act_derivative(a, x));
  }
}
// The activation's value, GELU and SiLU in float likewise (for glu's backward).
__device__ inline float act_value_f(const Act& a, float x) {
  switch (a.kind) {
    case 1: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case 5: return x / (1.f + expf(-x));
    default: return act_value(a, x);
  }
}

}  // namespace mf::cuda::backward::detail
