#include "ops/ref/ref_backend.h"

namespace mf {

void RefBackend::token_mix(const Tensor& r, const Tensor& x, const Tensor* bias, Tensor& y) {
  const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2), M = r.dim(0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t c = 0; c < C; ++c) {
        double acc = bias ? bias->data()[m] : 0.0;
        for (int64_t n = 0; n < N; ++n) acc += static_cast<double>(r.data()[m * N + n]) * x.data()[(b * N + n) * C + c];
        y.data()[(b * M + m) * C + c] = static_cast<float>(acc);
      }
}

void RefBackend::token_mix_backward(const Tensor& r, const Tensor& x, const Tensor& dy, Tensor* dx, Tensor* dr,
                                    Tensor* dbias) {
  const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2), M = r.dim(0);
  if (dx)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) {
          double acc = 0;
          for (int64_t m = 0; m < M; ++m) acc += static_cast<double>(r.data()[m * N + n]) * dy.data()[(b * M + m) * C + c];
          dx->data()[(b * N + n) * C + c] = static_cast<float>(acc);
        }
  if (dr)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0;
        for (int64_t b = 0; b < B; ++b)
          for (int64_t c = 0; c < C; ++c) acc += static_cast<double>(dy.data()[(b * M + m) * C + c]) * x.data()[(b * N + n) * C + c];
        dr->data()[m * N + n] += static_cast<float>(acc);
      }
  if (dbias)
    for (int64_t m = 0; m < M; ++m) {
      double acc = 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C; ++c) acc += dy.data()[(b * M + m) * C + c];
      dbias->data()[m] += static_cast<float>(acc);
    }
}

}  // namespace mf
