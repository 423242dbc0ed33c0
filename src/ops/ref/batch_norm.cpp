// BatchNorm, channels-last: channel c of element i is i % C; the statistics of a channel run over
// every row (all positions of all samples), as torch.nn.functional.batch_norm on NCHW data.
#include <cmath>
#include <vector>

#include "ops/ref/ref_backend.h"

namespace mf {

namespace {
// Per-channel mean and biased variance in double (two passes: mean, then centred squares).
void channel_stats(const Tensor& x, std::vector<double>& mean, std::vector<double>& var) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  const float* X = x.data();
  mean.assign(static_cast<size_t>(C), 0.0);
  var.assign(static_cast<size_t>(C), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) mean[static_cast<size_t>(c)] += X[r * C + c];
  for (auto& m : mean) m /= static_cast<double>(rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const double d = X[r * C + c] - mean[static_cast<size_t>(c)];
      var[static_cast<size_t>(c)] += d * d;
    }
  for (auto& v : var) v /= static_cast<double>(rows);
}
}  // namespace

void RefBackend::batch_norm_stats(const Tensor& x, Tensor& mean, Tensor& var) {
  std::vector<double> m, v;
  channel_stats(x, m, v);
  for (size_t c = 0; c < m.size(); ++c) {
    mean.data()[c] = static_cast<float>(m[c]);
    var.data()[c] = static_cast<float>(v[c]);
  }
}

void RefBackend::batch_norm(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& mean, const Tensor& var,
                            float eps, Tensor& y) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  const float* X = x.data();
  float* Y = y.data();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const double inv = 1.0 / std::sqrt(static_cast<double>(var.data()[c]) + eps);
      Y[r * C + c] = static_cast<float>((X[r * C + c] - static_cast<double>(mean.data()[c])) * inv * w.data()[c] +
                                        (b ? b->data()[c] : 0.0));
    }
}

// With x̂ = (x - mean) · rstd and g = dy · w: dw = Σ dy · x̂, db = Σ dy (sums over rows), and
//   eval (statistics constant):      dx = rstd · g
//   training (statistics of x):      dx = rstd · (g - mean(g) - x̂ · mean(g · x̂))
// where x̂ uses the statistics passed in (in training, the batch's, so they equal x's own).
void RefBackend::batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& var, float eps,
                                     bool batch_stats, const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  const float *X = x.data(), *DY = dy.data();
  std::vector<double> rstd(static_cast<size_t>(C)), sum_dy(static_cast<size_t>(C)), sum_dy_xh(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) rstd[static_cast<size_t>(c)] = 1.0 / std::sqrt(static_cast<double>(var.data()[c]) + eps);
  auto xhat = [&](int64_t r, int64_t c) {
    return (X[r * C + c] - static_cast<double>(mean.data()[c])) * rstd[static_cast<size_t>(c)];
  };
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      sum_dy[static_cast<size_t>(c)] += DY[r * C + c];
      sum_dy_xh[static_cast<size_t>(c)] += DY[r * C + c] * xhat(r, c);
    }
  const double n = static_cast<double>(rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const size_t k = static_cast<size_t>(c);
      const double wc = w.data()[c];
      double g = DY[r * C + c];
      if (batch_stats) g -= sum_dy[k] / n + xhat(r, c) * sum_dy_xh[k] / n;
      dx.data()[r * C + c] = static_cast<float>(rstd[k] * wc * g);
    }
  for (int64_t c = 0; c < C; ++c) {
    if (dw) dw->data()[c] += static_cast<float>(sum_dy_xh[static_cast<size_t>(c)]);
    if (db) db->data()[c] += static_cast<float>(sum_dy[static_cast<size_t>(c)]);
  }
}

}  // namespace mf
