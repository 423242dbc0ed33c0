// Mamba's causal depthwise conv1d on the CPU (Backend::causal_conv1d): channels-last, so each output
// token is K multiply-adds of contiguous channel rows; parallel over tokens, vectorised over
// channels. The backward's weight and bias gradients are reductions over every token: each thread
// sums its own tokens, and the threads' sums are added once.
#include <algorithm>
#include <vector>

#include <omp.h>

#include "ops/cpu/cpu_backend.h"

namespace mf {

void CpuBackend::causal_conv1d(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  const int64_t B = x.dim(0), L = x.dim(1), C = x.dim(2), K = w.dim(2);
  // Weights transposed to [K, C] so that a tap is a contiguous row like the activations.
  std::vector<float> wt(static_cast<size_t>(K * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) wt[static_cast<size_t>(k * C + c)] = w.data()[c * K + k];
  const float* X = x.data();
  const float* bias = b ? b->data() : nullptr;
  float* Y = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < B * L; ++row) {
    const int64_t t = row % L;
    float* yr = Y + row * C;
    if (bias)
      std::copy_n(bias, C, yr);
    else
      std::fill_n(yr, C, 0.f);
    for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) {
      const float* xr = X + (row - (K - 1) + k) * C;
      const float* wk = wt.data() + k * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] += wk[c] * xr[c];
    }
  }
}

void CpuBackend::causal_conv1d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                                        Tensor* db) {
  const int64_t B = x.dim(0), L = x.dim(1), C = x.dim(2), K = w.dim(2);
  std::vector<float> wt(static_cast<size_t>(K * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) wt[static_cast<size_t>(k * C + c)] = w.data()[c * K + k];
  const float* X = x.data();
  const float* G = dy.data();
  const int threads = omp_get_max_threads();
  // Per thread: [K, C] weight gradients, then [C] bias gradients.
  std::vector<std::vector<double>> part(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    auto& mine = part[static_cast<size_t>(omp_get_thread_num())];
    mine.assign(static_cast<size_t>((K + 1) * C), 0.0);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < B * L; ++row) {
      const int64_t t = row % L;
      const float* gr = G + row * C;
      // x[s] feeds y[s + K - 1 - k] for the taps that stay inside the sequence
      if (dx) {
        float* dr = dx->data() + row * C;
        std::fill_n(dr, C, 0.f);
        for (int64_t k = std::max<int64_t>(0, t + K - L); k < K; ++k) {  // t + K - 1 - k < L
          const float* g = G + (row + K - 1 - k) * C;
          const float* wk = wt.data() + k * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dr[c] += wk[c] * g[c];
        }
      }
      for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) {
        const float* xr = X + (row - (K - 1) + k) * C;
        double* acc = mine.data() + k * C;
        for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(gr[c]) * xr[c];
      }
      double* acc_b = mine.data() + K * C;
      for (int64_t c = 0; c < C; ++c) acc_b[c] += gr[c];
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t k = 0; k < K; ++k) {
      double s = 0;
      for (const auto& p : part) s += p[static_cast<size_t>(k * C + c)];
      if (dw) dw->data()[c * K + k] += static_cast<float>(s);
    }
    double s = 0;
    for (const auto& p : part) s += p[static_cast<size_t>(K * C + c)];
    if (db) db->data()[c] += static_cast<float>(s);
  }
}

}  // namespace mf
