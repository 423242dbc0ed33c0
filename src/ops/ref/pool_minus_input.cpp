#include <algorithm>

#include "ops/ref/ref_backend.h"

namespace mf {

void RefBackend::pool_minus_input(const Tensor& x, int kernel, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t pad = kernel / 2;
  const float* X = x.data();
  float* Y = y.data();
  for (int64_t n = 0; n < B; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        const int64_t h0 = std::max<int64_t>(0, h - pad), h1 = std::min<int64_t>(H, h - pad + kernel);
        const int64_t w0 = std::max<int64_t>(0, w - pad), w1 = std::min<int64_t>(W, w - pad + kernel);
        const double count = static_cast<double>((h1 - h0) * (w1 - w0));  // count_include_pad=False
        for (int64_t c = 0; c < C; ++c) {
          double acc = 0;
          for (int64_t i = h0; i < h1; ++i)
            for (int64_t j = w0; j < w1; ++j) acc += X[((n * H + i) * W + j) * C + c];
          const int64_t at = ((n * H + h) * W + w) * C + c;
          Y[at] = static_cast<float>(acc / count - X[at]);
        }
      }
}

}  // namespace mf
