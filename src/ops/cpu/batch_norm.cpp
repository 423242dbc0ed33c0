// BatchNorm over channels-last data: each channel's statistics run down a column of the [rows, C]
// matrix. The sums are taken row by row across all channels at once (unit stride), split into a
// fixed number of row chunks (cpu::chunked_sum) so the result is the same bits with any thread
// count; two passes (mean, then centred squares) as in the other norms.
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/reduce.h"

namespace mf {

namespace {
// y = x · a + s per channel over rows (a = w · rstd, s = b - mean · a), threads over rows.
void apply_affine(const float* X, int64_t rows, int64_t C, const float* a, const float* s, float* Y) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = X + r * C;
    float* yr = Y + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * a[c] + s[c];
  }
}
}  // namespace

void CpuBackend::batch_norm_stats(const Tensor& x, Tensor& mean, Tensor& var) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  const float* X = x.data();
  std::vector<double> sum(static_cast<size_t>(C)), sq(static_cast<size_t>(C));
  cpu::chunked_sum<double>(rows, C, sum.data(), [&](double* part, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = X + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) part[c] += xr[c];
    }
  });
  std::vector<float> m(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) m[static_cast<size_t>(c)] = static_cast<float>(sum[static_cast<size_t>(c)] / rows);
  const float* M = m.data();
  cpu::chunked_sum<double>(rows, C, sq.data(), [&](double* part, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = X + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float d = xr[c] - M[c];
        part[c] += static_cast<double>(d * d);
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    mean.data()[c] = M[c];
    var.data()[c] = static_cast<float>(sq[static_cast<size_t>(c)] / rows);
  }
}

void CpuBackend::batch_norm(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& mean, const Tensor& var,
                            float eps, Tensor& y) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  std::vector<float> a(static_cast<size_t>(C)), s(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const double scale = w.data()[c] / std::sqrt(static_cast<double>(var.data()[c]) + eps);
    a[static_cast<size_t>(c)] = static_cast<float>(scale);
    s[static_cast<size_t>(c)] = static_cast<float>((b ? b->data()[c] : 0.0) - mean.data()[c] * scale);
  }
  apply_affine(x.data(), rows, C, a.data(), s.data(), y.data());
}

void CpuBackend::batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& var,
                                     float eps, bool batch_stats, const Tensor& dy, Tensor& dx, Tensor* dw,
                                     Tensor* db) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  const float *X = x.data(), *DY = dy.data(), *M = mean.data();
  std::vector<float> rstd(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c)
    rstd[static_cast<size_t>(c)] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var.data()[c]) + eps));
  const float* R = rstd.data();
  // sums[0, C): Σ dy; sums[C, 2C): Σ dy · x̂
  std::vector<double> sums(static_cast<size_t>(2 * C));
  cpu::chunked_sum<double>(rows, 2 * C, sums.data(), [&](double* part, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float *xr = X + r * C, *gr = DY + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        part[c] += gr[c];
        part[C + c] += static_cast<double>(gr[c] * ((xr[c] - M[c]) * R[c]));
      }
    }
  });
  // dx = k · dy + p · x̂ + q per channel: eval k = w · rstd, p = q = 0; training additionally
  // p = -k · mean(dy · x̂), q = -k · mean(dy).
  std::vector<float> k(static_cast<size_t>(C)), p(static_cast<size_t>(C)), q(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const size_t i = static_cast<size_t>(c);
    k[i] = w.data()[c] * R[c];
    p[i] = batch_stats ? static_cast<float>(-k[i] * sums[static_cast<size_t>(C + c)] / rows) : 0.f;
    q[i] = batch_stats ? static_cast<float>(-k[i] * sums[i] / rows) : 0.f;
  }
  const float *K = k.data(), *P = p.data(), *Q = q.data();
  float* DX = dx.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = X + r * C, *gr = DY + r * C;
    float* dr = DX + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) dr[c] = K[c] * gr[c] + P[c] * ((xr[c] - M[c]) * R[c]) + Q[c];
  }
  for (int64_t c = 0; c < C; ++c) {
    if (dw) dw->data()[c] += static_cast<float>(sums[static_cast<size_t>(C + c)]);
    if (db) db->data()[c] += static_cast<float>(sums[static_cast<size_t>(c)]);
  }
}

}  // namespace mf
