// Max pooling, non-overlapping sum (mean) pooling and nearest upsampling on channels-last data,
// written from PyTorch's definitions (nn.MaxPool2d, nn.AvgPool2d(f, f), nn.Upsample(scale_factor=f)).
#include <limits>

#include "ops/ref/ref_backend.h"

namespace mf {

namespace {
// The input index of the maximum of output (n, oh, ow, c)'s window: the first in row-major window
// order among equals (PyTorch's rule), never the padding; -1 for a window with no pixel inside.
int64_t argmax_in_window(const Tensor& x, const ConvGeometry& g, int64_t n, int64_t oh, int64_t ow, int64_t c) {
  const int64_t H = x.dim(1), W = x.dim(2), C = x.dim(3);
  int64_t best = -1;
  float best_value = -std::numeric_limits<float>::infinity();
  for (int ki = 0; ki < g.kernel_h; ++ki) {
    const int64_t i = oh * g.stride_h - g.pad_h + ki;
    if (i < 0 || i >= H) continue;
    for (int kj = 0; kj < g.kernel_w; ++kj) {
      const int64_t j = ow * g.stride_w - g.pad_w + kj;
      if (j < 0 || j >= W) continue;
      const int64_t at = ((n * H + i) * W + j) * C + c;
      if (best < 0 || x.data()[at] > best_value) best = at, best_value = x.data()[at];
    }
  }
  return best;
}
}  // namespace

void RefBackend::max_pool2d(const Tensor& x, const ConvGeometry& g, Tensor& y) {
  const int64_t B = y.dim(0), Ho = y.dim(1), Wo = y.dim(2), C = y.dim(3);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t at = argmax_in_window(x, g, n, oh, ow, c);
          y.data()[((n * Ho + oh) * Wo + ow) * C + c] = x.data()[at];
        }
}

void RefBackend::max_pool2d_backward(const Tensor& x, const ConvGeometry& g, const Tensor& dy, Tensor& dx) {
  const int64_t B = dy.dim(0), Ho = dy.dim(1), Wo = dy.dim(2), C = dy.dim(3);
  for (int64_t k = 0; k < dx.numel(); ++k) dx.data()[k] = 0.f;
  for (int64_t n = 0; n < B; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int64_t c = 0; c < C; ++c)
          dx.data()[argmax_in_window(x, g, n, oh, ow, c)] += dy.data()[((n * Ho + oh) * Wo + ow) * C + c];
}

void RefBackend::sum_pool2d(const Tensor& x, int factor, float scale, Tensor& y) {
  const int64_t B = y.dim(0), h = y.dim(1), w = y.dim(2), C = y.dim(3), H = x.dim(1), W = x.dim(2);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j)
        for (int64_t c = 0; c < C; ++c) {
          double acc = 0;
          for (int a = 0; a < factor; ++a)
            for (int b = 0; b < factor; ++b) acc += x.data()[((n * H + i * factor + a) * W + j * factor + b) * C + c];
          y.data()[((n * h + i) * w + j) * C + c] = static_cast<float>(scale * acc);
        }
}

void RefBackend::upsample_nearest(const Tensor& x, int factor, float scale, Tensor& y) {
  const int64_t B = y.dim(0), H = y.dim(1), W = y.dim(2), C = y.dim(3), h = x.dim(1), w = x.dim(2);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j)
        for (int64_t c = 0; c < C; ++c)
          y.data()[((n * H + i) * W + j) * C + c] = scale * x.data()[((n * h + i / factor) * w + j / factor) * C + c];
}

}  // namespace mf
