#include <cmath>

#include "ops/ref/ref_backend.h"

namespace mf {

float apply_activation(const Activation& act, float x) {
  const double v = x;
  switch (act.kind) {
    case ActKind::Identity: return x;
    case ActKind::GELU: return static_cast<float>(0.5 * v * (1.0 + std::erf(v * M_SQRT1_2)));
    case ActKind::StarReLU: {
      const double r = v > 0 ? v : 0;
      return static_cast<float>(act.scale * r * r + act.bias);
    }
    case ActKind::SquaredReLU: {
      const double r = v > 0 ? v : 0;
      return static_cast<float>(r * r);
    }
    case ActKind::ReLU: return x > 0 ? x : 0.f;
    case ActKind::SiLU: return static_cast<float>(v / (1.0 + std::exp(-v)));
  }
  return x;
}

void RefBackend::activation(const Tensor& x, const Activation& act, Tensor& y) {
  const float* X = x.data();
  float* Y = y.data();
  for (int64_t i = 0; i < x.numel(); ++i) Y[i] = apply_activation(act, X[i]);
}

void RefBackend::scaled_residual(const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                                 const Tensor* layer_scale, Tensor& y) {
  const int64_t C = x.shape().last();
  const float* X = x.data();
  const float* Br = branch.data();
  float* Y = y.data();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = i % C;
    const double rs = res_scale ? res_scale->data()[c] : 1.0;
    const double ls = layer_scale ? layer_scale->data()[c] : 1.0;
    Y[i] = static_cast<float>(X[i] * rs + Br[i] * ls);
  }
}

void RefBackend::global_avg_pool(const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), C = x.shape().last(), HW = x.numel() / (B * C);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t p = 0; p < HW; ++p) acc += x.data()[(n * HW + p) * C + c];
      y.data()[n * C + c] = static_cast<float>(acc / static_cast<double>(HW));
    }
}

void RefBackend::nchw_to_nhwc(const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) y.data()[((n * H + h) * W + w) * C + c] = x.data()[((n * C + c) * H + h) * W + w];
}

}  // namespace mf
