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


// The adjoint of y = avg_pool(x) - x: every output o hands dy[o] / count(o) to each input of its
// window, and -dy[o] to itself.
void RefBackend::pool_minus_input_backward(const Tensor& dy, int kernel, Tensor& dx) {
  const int64_t B = dy.dim(0), H = dy.dim(1), W = dy.dim(2), C = dy.dim(3);
  const int64_t pad = kernel / 2;
  const float* G = dy.data();
  float* D = dx.data();
  for (int64_t n = 0; n < B; ++n)
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j)
        for (int64_t c = 0; c < C; ++c) {
          double acc = -static_cast<double>(G[((n * H + i) * W + j) * C + c]);
          // Outputs (h, w) whose window [h - pad, h - pad + k) contains (i, j).
          for (int64_t h = std::max<int64_t>(0, i - (kernel - 1 - pad)); h <= std::min<int64_t>(H - 1, i + pad); ++h)
            for (int64_t w = std::max<int64_t>(0, j - (kernel - 1 - pad)); w <= std::min<int64_t>(W - 1, j + pad);
                 ++w) {
              const int64_t h0 = std::max<int64_t>(0, h - pad), h1 = std::min<int64_t>(H, h - pad + kernel);
              const int64_t w0 = std::max<int64_t>(0, w - pad), w1 = std::min<int64_t>(W, w - pad + kernel);
              acc += G[((n * H + h) * W + w) * C + c] / static_cast<double>((h1 - h0) * (w1 - w0));
            }
          D[((n * H + i) * W + j) * C + c] = static_cast<float>(acc);
        }
}

}  // namespace mf
