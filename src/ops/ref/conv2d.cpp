#include <vector>

#include "ops/ref/ref_backend.h"

namespace mf {

void RefBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
  const int64_t Ho = y.dim(1), Wo = y.dim(2), Co = y.dim(3);
  const float* X = x.data();
  const float* Wt = w.data();  // [Co, Ci, kh, kw]
  float* Y = y.data();
  for (int64_t n = 0; n < B; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int64_t co = 0; co < Co; ++co) {
          double acc = b ? b->data()[co] : 0.0;
          for (int ki = 0; ki < g.kernel_h; ++ki) {
            const int64_t ih = oh * g.stride_h - g.pad_h + ki;
            if (ih < 0 || ih >= H) continue;
            for (int kj = 0; kj < g.kernel_w; ++kj) {
              const int64_t iw = ow * g.stride_w - g.pad_w + kj;
              if (iw < 0 || iw >= W) continue;
              const float* xp = X + ((n * H + ih) * W + iw) * Ci;
              for (int64_t ci = 0; ci < Ci; ++ci)
                acc += static_cast<double>(xp[ci]) * Wt[((co * Ci + ci) * g.kernel_h + ki) * g.kernel_w + kj];
            }
          }
          Y[((n * Ho + oh) * Wo + ow) * Co + co] = static_cast<float>(acc);
        }
}


void RefBackend::conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy, Tensor* dx,
                                 Tensor* dw, Tensor* db) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
  const int64_t Ho = dy.dim(1), Wo = dy.dim(2), Co = dy.dim(3);
  const int64_t kh = g.kernel_h, kw = g.kernel_w;
  std::vector<double> gx(static_cast<size_t>(x.numel())), gw(static_cast<size_t>(w.numel())), gb(static_cast<size_t>(Co));
  const float* X = x.data();
  const float* Wt = w.data();
  const float* G = dy.data();
  for (int64_t n = 0; n < B; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int64_t co = 0; co < Co; ++co) {
          const double gy = G[((n * Ho + oh) * Wo + ow) * Co + co];
          gb[static_cast<size_t>(co)] += gy;
          for (int64_t ki = 0; ki < kh; ++ki) {
            const int64_t ih = oh * g.stride_h - g.pad_h + ki;
            if (ih < 0 || ih >= H) continue;
            for (int64_t kj = 0; kj < kw; ++kj) {
              const int64_t iw = ow * g.stride_w - g.pad_w + kj;
              if (iw < 0 || iw >= W) continue;
              for (int64_t ci = 0; ci < Ci; ++ci) {
                const int64_t xi = ((n * H + ih) * W + iw) * Ci + ci;
                const int64_t wi = ((co * Ci + ci) * kh + ki) * kw + kj;
                gx[static_cast<size_t>(xi)] += gy * Wt[wi];
                gw[static_cast<size_t>(wi)] += gy * X[xi];
              }
            }
          }
        }
  if (dx)
    for (int64_t i = 0; i < x.numel(); ++i) dx->data()[i] = static_cast<float>(gx[static_cast<size_t>(i)]);
  if (dw)
    for (int64_t i = 0; i < w.numel(); ++i) dw->data()[i] += static_cast<float>(gw[static_cast<size_t>(i)]);
  if (db)
    for (int64_t i = 0; i < Co; ++i) db->data()[i] += static_cast<float>(gb[static_cast<size_t>(i)]);
}

}  // namespace mf
