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


namespace {
// Backward of y = x̂ · w (+ b), x̂ = (x - mean) · rstd over a group of n values, where channel c of
// element i is i % C: dx = rstd · (g - mean(g) - x̂ · mean(g · x̂)) with g = dy · w.
void norm_group_backward(const float* x, const float* dy, const float* w, int64_t n, int64_t C, double eps, float* dx,
                         std::vector<double>& dw, std::vector<double>& db) {
  double mean = 0, var = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= static_cast<double>(n);
  const double rstd = 1.0 / std::sqrt(var + eps);
  double mg = 0, mgx = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double xh = (x[i] - mean) * rstd;
    const double g = static_cast<double>(dy[i]) * w[i % C];
    mg += g;
    mgx += g * xh;
    dw[static_cast<size_t>(i % C)] += dy[i] * xh;
    db[static_cast<size_t>(i % C)] += dy[i];
  }
  mg /= static_cast<double>(n);
  mgx /= static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const double xh = (x[i] - mean) * rstd;
    const double g = static_cast<double>(dy[i]) * w[i % C];
    dx[i] = static_cast<float>(rstd * (g - mg - xh * mgx));
  }
}

void add_into(Tensor* t, const std::vector<double>& v) {
  if (!t) return;
  for (size_t i = 0; i < v.size(); ++i) t->data()[i] += static_cast<float>(v[i]);
}
}  // namespace

void RefBackend::layer_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                     Tensor* dw, Tensor* db) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  std::vector<double> gw(static_cast<size_t>(C)), gb(static_cast<size_t>(C));
  for (int64_t r = 0; r < rows; ++r)
    norm_group_backward(x.data() + r * C, dy.data() + r * C, w.data(), C, C, eps, dx.data() + r * C, gw, gb);
  add_into(dw, gw);
  add_into(db, gb);
}

void RefBackend::group_norm1_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                      Tensor* dw, Tensor* db) {
  const int64_t B = x.dim(0), C = x.shape().last(), per = x.numel() / B;
  std::vector<double> gw(static_cast<size_t>(C)), gb(static_cast<size_t>(C));
  for (int64_t n = 0; n < B; ++n)
    norm_group_backward(x.data() + n * per, dy.data() + n * per, w.data(), per, C, eps, dx.data() + n * per, gw, gb);
  add_into(dw, gw);
  add_into(db, gb);
}

}  // namespace mf
