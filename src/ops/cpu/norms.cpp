// Norms over channels-last data. LayerNorm normalises each row of C values; GroupNorm with one
// group normalises each sample over H·W·C. Both use two passes (mean, then centred variance) rather
// than E[x²] - E[x]², which loses precision when the mean is large.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/norm_affine.h"
#include "ops/cpu/reduce.h"

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

void cpu::group_norm1_affine(const Tensor& x, const Tensor& w, const Tensor* b, float eps, float* a, float* shift) {
  const int64_t B = x.dim(0), C = x.shape().last(), per = x.numel() / B, pixels = per / C;
  const float* X = x.data();
  // Statistics: each sample is cut into a fixed number of chunks of pixels (so the result does not
  // depend on the thread count). A chunk (tens of KB) is read from memory once for its mean and a
  // second time, from cache, for its centred sum of squares; the chunks then combine exactly
  // (Chan et al.'s pairwise update). Two passes over memory in all, with the apply pass below.
  const int64_t chunks = std::max<int64_t>(1, std::min(cpu::kReductionChunks, pixels));
  std::vector<double> chunk_mean(static_cast<size_t>(B * chunks)), chunk_m2(static_cast<size_t>(B * chunks));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t k = 0; k < chunks; ++k) {
      const int64_t p0 = pixels * k / chunks, p1 = pixels * (k + 1) / chunks;
      const float* xs = X + n * per + p0 * C;
      const int64_t rows = p1 - p0;
      double sum = 0;  // per pixel in float, across pixels in double
      for (int64_t p = 0; p < rows; ++p) {
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; ++c) s += xs[p * C + c];
        sum += s;
      }
      const double mean = sum / static_cast<double>(rows * C);
      const float meanf = static_cast<float>(mean);
      double sq = 0;
      for (int64_t p = 0; p < rows; ++p) {
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; ++c) s += (xs[p * C + c] - meanf) * (xs[p * C + c] - meanf);
        sq += s;
      }
      // Centre on the float mean used above, then correct to the double mean: Σ(x-m)² = Σ(x-mf)² - n(m-mf)².
      const double shift = mean - static_cast<double>(meanf);
      chunk_mean[static_cast<size_t>(n * chunks + k)] = mean;
      chunk_m2[static_cast<size_t>(n * chunks + k)] = sq - static_cast<double>(rows * C) * shift * shift;
    }
  // Per sample: combine the chunks, then fold mean, 1/std, weight and bias into y = x · a + shift.
  for (int64_t n = 0; n < B; ++n) {
    double count = 0, mean = 0, m2 = 0;
    for (int64_t k = 0; k < chunks; ++k) {
      const double nk = static_cast<double>((pixels * (k + 1) / chunks - pixels * k / chunks) * C);
      const double mk = chunk_mean[static_cast<size_t>(n * chunks + k)];
      const double delta = mk - mean, total = count + nk;
      mean += delta * nk / total;
      m2 += chunk_m2[static_cast<size_t>(n * chunks + k)] + delta * delta * count * nk / total;
      count = total;
    }
    const double inv = 1.0 / std::sqrt(m2 / static_cast<double>(per) + eps);
    for (int64_t c = 0; c < C; ++c) {
      a[n * C + c] = static_cast<float>(inv * w.data()[c]);
      if (shift) shift[n * C + c] = static_cast<float>((b ? b->data()[c] : 0.0) - mean * inv * w.data()[c]);
    }
  }
}

void CpuBackend::group_norm1(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y) {
  const int64_t B = x.dim(0), C = x.shape().last(), pixels = x.numel() / (B * C);
  std::vector<float> a(static_cast<size_t>(B * C)), shift(static_cast<size_t>(B * C));
  cpu::group_norm1_affine(x, w, b, eps, a.data(), shift.data());
  cpu::group_norm1_apply_rows(x.data(), 0, B * pixels, pixels, C, a.data(), shift.data(), y.data());
}

void cpu::group_norm1_apply_rows(const float* x, int64_t r0, int64_t rows, int64_t pixels, int64_t C, const float* a,
                                 const float* shift, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t n = (r0 + i) / pixels;
    const float* an = a + n * C;
    const float* sn = shift + n * C;
    const float* xr = x + (r0 + i) * C;
    float* o = out + i * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) o[c] = xr[c] * an[c] + sn[c];
  }
}


namespace {
// One group of n values (a row for LayerNorm, a sample for GroupNorm1) with channel = i % C:
// dx = rstd · (g - mean(g) - x̂ · mean(g · x̂)), g = dy · w; dw += dy · x̂, db += dy (into acc).
struct GroupStats {
  float mean, rstd;
};

GroupStats stats(const float* x, int64_t n, float eps) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / static_cast<double>(n);
  double sq = 0;
  for (int64_t i = 0; i < n; ++i) sq += (x[i] - mean) * (x[i] - mean);
  return {static_cast<float>(mean), static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(n) + eps))};
}
}  // namespace

void CpuBackend::layer_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                     Tensor* dw, Tensor* db) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  const float* X = x.data();
  const float* G = dy.data();
  const float* Wt = w.data();
  float* D = dx.data();
  std::vector<float> sums(static_cast<size_t>(2 * C), 0.f);  // [dw | db]
  cpu::chunked_sum(rows, 2 * C, sums.data(), [&, X, G, Wt, D, C](float* __restrict acc, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = X + r * C;
      const float* gr = G + r * C;
      const GroupStats s = stats(xr, C, eps);
      float mg = 0.f, mgx = 0.f;
#pragma omp simd reduction(+ : mg, mgx)
      for (int64_t c = 0; c < C; ++c) {
        const float xh = (xr[c] - s.mean) * s.rstd;
        const float g = gr[c] * Wt[c];
        mg += g;
        mgx += g * xh;
        acc[c] += gr[c] * xh;
        acc[C + c] += gr[c];
      }
      mg /= static_cast<float>(C);
      mgx /= static_cast<float>(C);
      float* dr = D + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float xh = (xr[c] - s.mean) * s.rstd;
        dr[c] = s.rstd * (gr[c] * Wt[c] - mg - xh * mgx);
      }
    }
  });
  if (dw)
    for (int64_t c = 0; c < C; ++c) dw->data()[c] += sums[static_cast<size_t>(c)];
  if (db)
    for (int64_t c = 0; c < C; ++c) db->data()[c] += sums[static_cast<size_t>(C + c)];
}

void CpuBackend::group_norm1_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                      Tensor* dw, Tensor* db) {
  const int64_t B = x.dim(0), C = x.shape().last(), per = x.numel() / B, pixels = per / C;
  const float* Wt = w.data();
  for (int64_t n = 0; n < B; ++n) {
    const float* xs = x.data() + n * per;
    const float* gs = dy.data() + n * per;
    float* ds = dx.data() + n * per;
    // Pass 1: the sample's mean and rstd; pass 2: mean(g), mean(g · x̂) and the parameter gradients;
    // pass 3: dx. Each pass sums per pixel row into fixed chunks.
    std::vector<float> s1(2, 0.f);
    cpu::chunked_sum(pixels, 1, s1.data(), [&](float* acc, int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p)
        for (int64_t c = 0; c < C; ++c) acc[0] += xs[p * C + c];
    });
    const float mean = s1[0] / static_cast<float>(per);
    cpu::chunked_sum(pixels, 1, s1.data() + 1, [&](float* acc, int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p)
        for (int64_t c = 0; c < C; ++c) acc[0] += (xs[p * C + c] - mean) * (xs[p * C + c] - mean);
    });
    const float rstd = 1.f / std::sqrt(s1[1] / static_cast<float>(per) + eps);
    std::vector<float> s2(static_cast<size_t>(2 * C + 2), 0.f);  // [dw | db | Σg | Σg·x̂]
    cpu::chunked_sum(pixels, 2 * C + 2, s2.data(), [&](float* acc, int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p)
        for (int64_t c = 0; c < C; ++c) {
          const float xh = (xs[p * C + c] - mean) * rstd;
          const float g = gs[p * C + c];
          acc[c] += g * xh;
          acc[C + c] += g;
          acc[2 * C] += g * Wt[c];
          acc[2 * C + 1] += g * Wt[c] * xh;
        }
    });
    const float mg = s2[static_cast<size_t>(2 * C)] / static_cast<float>(per);
    const float mgx = s2[static_cast<size_t>(2 * C + 1)] / static_cast<float>(per);
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < pixels; ++p) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float xh = (xs[p * C + c] - mean) * rstd;
        ds[p * C + c] = rstd * (gs[p * C + c] * Wt[c] - mg - xh * mgx);
      }
    }
    if (dw)
      for (int64_t c = 0; c < C; ++c) dw->data()[c] += s2[static_cast<size_t>(c)];
    if (db)
      for (int64_t c = 0; c < C; ++c) db->data()[c] += s2[static_cast<size_t>(C + c)];
  }
}

}  // namespace mf
