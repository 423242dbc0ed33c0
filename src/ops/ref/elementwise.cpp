#include <algorithm>
#include <cmath>
#include <vector>

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
    case ActKind::SoftShrink: {
      const float t = act.threshold;
      return x > t ? x - t : x < -t ? x + t : 0.f;
    }
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


double activation_derivative(const Activation& act, double x) {
  switch (act.kind) {
    case ActKind::Identity: return 1.0;
    case ActKind::GELU: {
      const double cdf = 0.5 * (1.0 + std::erf(x * M_SQRT1_2));
      const double pdf = std::exp(-0.5 * x * x) * 0.3989422804014327;  // 1/sqrt(2π)
      return cdf + x * pdf;
    }
    case ActKind::StarReLU: return x > 0 ? 2.0 * act.scale * x : 0.0;
    case ActKind::SquaredReLU: return x > 0 ? 2.0 * x : 0.0;
    case ActKind::ReLU: return x > 0 ? 1.0 : 0.0;
    case ActKind::SiLU: {
      const double s = 1.0 / (1.0 + std::exp(-x));
      return s * (1.0 + x * (1.0 - s));
    }
    case ActKind::SoftShrink: return std::fabs(x) > act.threshold ? 1.0 : 0.0;
  }
  return 1.0;
}

void RefBackend::activation_backward(const Tensor& x, const Activation& act, const Tensor& dy, Tensor& dx,
                                     Tensor* dscale, Tensor* dbias) {
  double ds = 0, db = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x.data()[i], g = dy.data()[i];
    if (act.kind == ActKind::StarReLU) {
      const double r = v > 0 ? v : 0;
      ds += g * r * r;
      db += g;
    }
    dx.data()[i] = static_cast<float>(g * activation_derivative(act, v));
  }
  if (act.kind == ActKind::StarReLU) {
    if (dscale) dscale->data()[0] += static_cast<float>(ds);
    if (dbias) dbias->data()[0] += static_cast<float>(db);
  }
}

void RefBackend::scaled_residual_backward(const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                                          const Tensor* layer_scale, const Tensor& dy, Tensor& dx, Tensor& dbranch,
                                          Tensor* d_res_scale, Tensor* d_layer_scale) {
  const int64_t C = x.shape().last();
  std::vector<double> grs(static_cast<size_t>(C)), gls(static_cast<size_t>(C));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = i % C;
    const double g = dy.data()[i];
    grs[static_cast<size_t>(c)] += g * x.data()[i];
    if (d_layer_scale) gls[static_cast<size_t>(c)] += g * branch.data()[i];
    if (dx.defined()) dx.data()[i] = static_cast<float>(g * (res_scale ? res_scale->data()[c] : 1.0));
    dbranch.data()[i] = static_cast<float>(g * (layer_scale ? layer_scale->data()[c] : 1.0));
  }
  if (d_res_scale)
    for (int64_t c = 0; c < C; ++c) d_res_scale->data()[c] += static_cast<float>(grs[static_cast<size_t>(c)]);
  if (d_layer_scale)
    for (int64_t c = 0; c < C; ++c) d_layer_scale->data()[c] += static_cast<float>(gls[static_cast<size_t>(c)]);
}

void RefBackend::global_avg_pool_backward(const Tensor& dy, Tensor& dx) {
  const int64_t B = dx.dim(0), C = dx.shape().last(), HW = dx.numel() / (B * C);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t p = 0; p < HW; ++p)
      for (int64_t c = 0; c < C; ++c)
        dx.data()[(n * HW + p) * C + c] = static_cast<float>(dy.data()[n * C + c] / static_cast<double>(HW));
}

void RefBackend::sample_scale(const Tensor& x, const Tensor& s, Tensor& y) {
  const int64_t B = x.dim(0), per = x.numel() / B;
  for (int64_t n = 0; n < B; ++n)
    for (int64_t i = 0; i < per; ++i) y.data()[n * per + i] = x.data()[n * per + i] * s.data()[n];
}

void RefBackend::cross_entropy(const Tensor& logits, const Tensor& target, float grad_scale, Tensor& loss,
                               Tensor& dlogits) {
  const int64_t B = logits.dim(0), K = logits.dim(1);
  for (int64_t n = 0; n < B; ++n) {
    const float* l = logits.data() + n * K;
    const float* t = target.data() + n * K;
    double mx = l[0];
    for (int64_t k = 1; k < K; ++k) mx = std::max(mx, static_cast<double>(l[k]));
    double sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += std::exp(l[k] - mx);
    const double lse = mx + std::log(sum);
    double value = 0;
    for (int64_t k = 0; k < K; ++k) {
      value -= t[k] * (l[k] - lse);
      dlogits.data()[n * K + k] = static_cast<float>((std::exp(l[k] - lse) - t[k]) * grad_scale);
    }
    loss.data()[n] = static_cast<float>(value);
  }
}

}  // namespace mf
