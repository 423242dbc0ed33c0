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

}  // namespace mf
