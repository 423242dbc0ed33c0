// nn.ConvTranspose2d on channels-last data, written from its definition (the adjoint of conv2d): every
// input pixel scatters w[ci, :, ki, kj] · x into the output pixel (i·stride - pad + ki, j·stride -
// pad + kj). Accumulated in double, as the other reference kernels.
#include <vector>

#include "ops/ref/ref_backend.h"

namespace mf {

namespace {
// Calls f(n, i, j, oh, ow, ki, kj) for every (input pixel, tap) pair that lands inside the output.
template <typename F>
void for_each_tap(const Tensor& x, const Tensor& y, const ConvGeometry& g, F f) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ho = y.dim(1), Wo = y.dim(2);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j)
        for (int ki = 0; ki < g.kernel_h; ++ki) {
          const int64_t oh = i * g.stride_h - g.pad_h + ki;
          if (oh < 0 || oh >= Ho) continue;
          for (int kj = 0; kj < g.kernel_w; ++kj) {
            const int64_t ow = j * g.stride_w - g.pad_w + kj;
            if (ow < 0 || ow >= Wo) continue;
            f(n, i, j, oh, ow, ki, kj);
          }
        }
}
}  // namespace

void RefBackend::conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g,
                                  Tensor& y) {
  const int64_t H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Ho = y.dim(1), Wo = y.dim(2), Co = y.dim(3);
  const int64_t kh = g.kernel_h, kw = g.kernel_w;
  std::vector<double> acc(static_cast<size_t>(y.numel()), 0.0);
  for (int64_t p = 0; p < y.numel() / Co; ++p)
    for (int64_t co = 0; co < Co; ++co) acc[static_cast<size_t>(p * Co + co)] = b ? b->data()[co] : 0.0;
  const float* X = x.data();
  const float* Wt = w.data();  // [Ci, Co, kh, kw]
  for_each_tap(x, y, g, [&](int64_t n, int64_t i, int64_t j, int64_t oh, int64_t ow, int ki, int kj) {
    const float* xp = X + ((n * H + i) * W + j) * Ci;
    double* yp = acc.data() + ((n * Ho + oh) * Wo + ow) * Co;
    for (int64_t ci = 0; ci < Ci; ++ci)
      for (int64_t co = 0; co < Co; ++co) yp[co] += static_cast<double>(xp[ci]) * Wt[((ci * Co + co) * kh + ki) * kw + kj];
  });
  for (int64_t k = 0; k < y.numel(); ++k) y.data()[k] = static_cast<float>(acc[static_cast<size_t>(k)]);
}

void RefBackend::conv_transpose2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                                           Tensor* dx, Tensor* dw, Tensor* db) {
  const int64_t H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Ho = dy.dim(1), Wo = dy.dim(2), Co = dy.dim(3);
  const int64_t kh = g.kernel_h, kw = g.kernel_w;
  std::vector<double> gx(static_cast<size_t>(x.numel()), 0.0), gw(static_cast<size_t>(w.numel()), 0.0);
  const float* X = x.data();
  const float* Wt = w.data();
  const float* G = dy.data();
  for_each_tap(x, dy, g, [&](int64_t n, int64_t i, int64_t j, int64_t oh, int64_t ow, int ki, int kj) {
    const int64_t xi = ((n * H + i) * W + j) * Ci;
    const float* gp = G + ((n * Ho + oh) * Wo + ow) * Co;
    for (int64_t ci = 0; ci < Ci; ++ci)
      for (int64_t co = 0; co < Co; ++co) {
        const int64_t wi = ((ci * Co + co) * kh + ki) * kw + kj;
        gx[static_cast<size_t>(xi + ci)] += static_cast<double>(gp[co]) * Wt[wi];
        gw[static_cast<size_t>(wi)] += static_cast<double>(gp[co]) * X[xi + ci];
      }
  });
  if (dx)
    for (int64_t k = 0; k < x.numel(); ++k) dx->data()[k] = static_cast<float>(gx[static_cast<size_t>(k)]);
  if (dw)
    for (int64_t k = 0; k < w.numel(); ++k) dw->data()[k] += static_cast<float>(gw[static_cast<size_t>(k)]);
  if (db) {
    std::vector<double> gb(static_cast<size_t>(Co), 0.0);
    for (int64_t p = 0; p < dy.numel() / Co; ++p)
      for (int64_t co = 0; co < Co; ++co) gb[static_cast<size_t>(co)] += G[p * Co + co];
    for (int64_t co = 0; co < Co; ++co) db->data()[co] += static_cast<float>(gb[static_cast<size_t>(co)]);
  }
}

}  // namespace mf
