#include <cmath>
#include <vector>

#include "ops/ref/ref_backend.h"

namespace mf {

// Biased variance, y = (x - mean) / sqrt(var + eps) * w (+ b), as torch.nn.functional.layer_norm.
void RefBackend::layer_norm(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  const float* X = x.data();
  float* Y = y.data();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = X + r * C;
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mean += xr[c];
    mean /= static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    var /= static_cast<double>(C);
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t c = 0; c < C; ++c)
      Y[r * C + c] = static_cast<float>((xr[c] - mean) * inv * w.data()[c] + (b ? b->data()[c] : 0.0));
  }
}

// GroupNorm with one group: statistics over (H, W, C) of each sample, affine per channel.
void RefBackend::group_norm1(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y) {
  const int64_t B = x.dim(0), C = x.shape().last(), per = x.numel() / B;
  const float* X = x.data();
  float* Y = y.data();
  for (int64_t n = 0; n < B; ++n) {
    const float* xs = X + n * per;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < per; ++i) mean += xs[i];
    mean /= static_cast<double>(per);
    for (int64_t i = 0; i < per; ++i) var += (xs[i] - mean) * (xs[i] - mean);
    var /= static_cast<double>(per);
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < per; ++i) {
      const int64_t c = i % C;
      Y[n * per + i] = static_cast<float>((xs[i] - mean) * inv * w.data()[c] + (b ? b->data()[c] : 0.0));
    }
  }
}

}  // namespace mf
