// Depthwise convolution, channels-last, computed directly (never im2col): every output pixel is a
// weighted sum of k×k input pixels, each a contiguous run of C channels, so the inner loop runs over
// channels with the weights repacked to [kh, kw, C] and vectorises. Channels go in blocks of 64
// (four AVX-512 registers of accumulators).
#include <algorithm>
#include <memory>
#include <vector>

#include "ops/cpu/cpu_backend.h"

namespace mf {

namespace {
constexpr int64_t kBlock = 64;

template <int64_t CB>
inline void accumulate_block(const float* X, const float* Wr, const ConvGeometry& g, int64_t H, int64_t W, int64_t C,
                             int64_t n, int64_t oh, int64_t ow, int64_t c0, int64_t cb, const float* bias, float* out) {
  float acc[CB];
  for (int64_t c = 0; c < CB; ++c) acc[c] = (c < cb && bias) ? bias[c0 + c] : 0.f;
  for (int ki = 0; ki < g.kernel_h; ++ki) {
    const int64_t ih = oh * g.stride_h - g.pad_h + ki;
    if (ih < 0 || ih >= H) continue;
    for (int kj = 0; kj < g.kernel_w; ++kj) {
      const int64_t iw = ow * g.stride_w - g.pad_w + kj;
      if (iw < 0 || iw >= W) continue;
      const float* xp = X + ((n * H + ih) * W + iw) * C + c0;
      const float* wp = Wr + (ki * g.kernel_w + kj) * C + c0;
      if (cb == CB) {
#pragma omp simd
        for (int64_t c = 0; c < CB; ++c) acc[c] += xp[c] * wp[c];
      } else {
        for (int64_t c = 0; c < cb; ++c) acc[c] += xp[c] * wp[c];
      }
    }
  }
  for (int64_t c = 0; c < cb; ++c) out[c] = acc[c];
}
}  // namespace

void CpuBackend::depthwise_conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g,
                                  Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t Ho = y.dim(1), Wo = y.dim(2);
  const int64_t taps = static_cast<int64_t>(g.kernel_h) * g.kernel_w;

  // [C, 1, kh, kw] -> [kh, kw, C], cached on the weight tensor.
  auto packed = std::static_pointer_cast<std::vector<float>>(w.derived("dw_khwc"));
  if (!packed) {
    packed = std::make_shared<std::vector<float>>(static_cast<size_t>(taps * C));
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t) (*packed)[static_cast<size_t>(t * C + c)] = w.data()[c * taps + t];
    w.set_derived("dw_khwc", packed);
  }
  const float* Wr = packed->data();
  const float* X = x.data();
  const float* bias = b ? b->data() : nullptr;
  float* Y = y.data();

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        float* out = Y + ((n * Ho + oh) * Wo + ow) * C;
        for (int64_t c0 = 0; c0 < C; c0 += kBlock)
          accumulate_block<kBlock>(X, Wr, g, H, W, C, n, oh, ow, c0, std::min(kBlock, C - c0), bias, out + c0);
      }
}

}  // namespace mf
