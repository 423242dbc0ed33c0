#include "ops/ref/ref_backend.h"

namespace mf {

void RefBackend::linear(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  const int64_t K = x.shape().last(), M = x.shape().rows(), N = w.dim(0);
  const float* X = x.data();
  const float* W = w.data();
  float* Y = y.data();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = b ? b->data()[n] : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(X[m * K + k]) * W[n * K + k];
      Y[m * N + n] = static_cast<float>(acc);
    }
}


void RefBackend::linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                                 Tensor* db) {
  const int64_t K = x.shape().last(), M = x.shape().rows(), N = w.dim(0);
  const float* X = x.data();
  const float* W = w.data();
  const float* G = dy.data();
  if (dx)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) acc += static_cast<double>(G[m * N + n]) * W[n * K + k];
        dx->data()[m * K + k] = static_cast<float>(acc);
      }
  if (dw)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        double acc = 0;
        for (int64_t m = 0; m < M; ++m) acc += static_cast<double>(G[m * N + n]) * X[m * K + k];
        dw->data()[n * K + k] += static_cast<float>(acc);
      }
  if (db)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t m = 0; m < M; ++m) acc += G[m * N + n];
      db->data()[n] += static_cast<float>(acc);
    }
}

}  // namespace mf
