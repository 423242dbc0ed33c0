#include "ops/ref/ref_backend.h"

namespace mf {

void RefBackend::token_mix(const Tensor& r, const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < N; ++m)
      for (int64_t c = 0; c < C; ++c) {
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) acc += static_cast<double>(r.data()[m * N + n]) * x.data()[(b * N + n) * C + c];
        y.data()[(b * N + m) * C + c] = static_cast<float>(acc);
      }
}

}  // namespace mf
