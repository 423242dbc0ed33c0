// Norms over channels-last data. LayerNorm normalises each row of C values; GroupNorm with one
// group normalises each sample over H·W·C. Both use two passes (mean, then centred variance) rather
// than E[x²] - E[x]², which loses precision when the mean is large.
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_backend.h"

namespace mf {

void CpuBackend::layer_norm(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  const float* X = x.data();
  const float* Wt = w.data();
  const float* Bs = b ? b->data() : nullptr;
  float* Y = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = X + r * C;
    float* yr = Y + r * C;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += xr[c];
    const float mean = sum / static_cast<float>(C);
    float sq = 0.f;
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < C; ++c) sq += (xr[c] - mean) * (xr[c] - mean);
    const float inv = 1.f / std::sqrt(sq / static_cast<float>(C) + eps);
    if (Bs) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mean) * inv * Wt[c] + Bs[c];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mean) * inv * Wt[c];
    }
  }
}

void CpuBackend::group_norm1(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y) {
  const int64_t B = x.dim(0), C = x.shape().last(), per = x.numel() / B, pixels = per / C;
  const float* X = x.data();
  float* Y = y.data();
  std::vector<float> a(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
  for (int64_t n = 0; n < B; ++n) {
    const float* xs = X + n * per;
    // Per-sample sums run to ~10^5 terms: accumulate per pixel in float, across pixels in double.
    double sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
    for (int64_t p = 0; p < pixels; ++p) {
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < C; ++c) s += xs[p * C + c];
      sum += s;
    }
    const double mean = sum / static_cast<double>(per);
    const float meanf = static_cast<float>(mean);
    double sq = 0;
#pragma omp parallel for reduction(+ : sq) schedule(static)
    for (int64_t p = 0; p < pixels; ++p) {
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < C; ++c) s += (xs[p * C + c] - meanf) * (xs[p * C + c] - meanf);
      sq += s;
    }
    const double inv = 1.0 / std::sqrt(sq / static_cast<double>(per) + eps);
    // y = x · a[c] + shift[c], folding mean, 1/std, weight and bias into two vectors.
    for (int64_t c = 0; c < C; ++c) {
      a[static_cast<size_t>(c)] = static_cast<float>(inv * w.data()[c]);
      shift[static_cast<size_t>(c)] = static_cast<float>((b ? b->data()[c] : 0.0) - mean * inv * w.data()[c]);
    }
    float* ys = Y + n * per;
    const float* ap = a.data();
    const float* sp = shift.data();
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < pixels; ++p) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) ys[p * C + c] = xs[p * C + c] * ap[c] + sp[c];
    }
  }
}

}  // namespace mf
