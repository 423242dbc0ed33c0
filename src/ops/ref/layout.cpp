// Layout ops: an axis permutation, MS-MLP's grouped cyclic shift and torch's bicubic resize, as plain
// index arithmetic.
#include "ops/bicubic_taps.h"
#include "ops/ref/ref_backend.h"

namespace mf {

void RefBackend::permute(const Tensor& x, const std::vector<int>& perm, Tensor& y) {
  const int rank = x.ndim();
  // Input strides, read in output-axis order.
  std::vector<int64_t> in_stride(static_cast<size_t>(rank), 1);
  for (int a = rank - 2; a >= 0; --a) in_stride[static_cast<size_t>(a)] = in_stride[static_cast<size_t>(a + 1)] * x.dim(a + 1);
  std::vector<int64_t> index(static_cast<size_t>(rank), 0);
  const int64_t n = y.numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t src = 0;
    for (int a = 0; a < rank; ++a) src += index[static_cast<size_t>(a)] * in_stride[static_cast<size_t>(perm[static_cast<size_t>(a)])];
    y.data()[i] = x.data()[src];
    for (int a = rank - 1; a >= 0; --a) {  // next output index, last axis fastest
      if (++index[static_cast<size_t>(a)] < y.dim(a)) break;
      index[static_cast<size_t>(a)] = 0;
    }
  }
}

void RefBackend::spatial_shift(const Tensor& x, int axis, int64_t group_width, const std::vector<int>& shifts,
                               Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t n = axis == 1 ? H : W;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t s = shifts[static_cast<size_t>(c / group_width)];
          const int64_t i = axis == 1 ? h : w;
          const int64_t from = ((i - s) % n + n) % n;
          const int64_t sh = axis == 1 ? from : h, sw = axis == 1 ? w : from;
          y.data()[((b * H + h) * W + w) * C + c] = x.data()[((b * H + sh) * W + sw) * C + c];
        }
}

void RefBackend::resize_bicubic(const Tensor& x, bool adjoint, Tensor& y) {
  // Forward: small [B, h, w, C] -> large [B, Ho, Wo, C] (or any sizes); taps from the input grid to
  // the output grid. Adjoint: the same taps (from y's grid to x's), transposed.
  const Tensor& in = adjoint ? y : x;     // the forward map's input grid
  const Tensor& out = adjoint ? x : y;    // and its output grid
  const int64_t B = in.dim(0), H = in.dim(1), W = in.dim(2), C = in.dim(3), Ho = out.dim(1), Wo = out.dim(2);
  const BicubicTaps ty = bicubic_taps(H, Ho), tx = bicubic_taps(W, Wo);
  std::vector<double> acc(static_cast<size_t>(adjoint ? in.numel() : 0));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t oy = 0; oy < Ho; ++oy)
      for (int64_t ox = 0; ox < Wo; ++ox)
        for (int64_t c = 0; c < C; ++c) {
          double sum = 0;
          const int64_t o = ((b * Ho + oy) * Wo + ox) * C + c;
          for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) {
              const double w = ty.weight[static_cast<size_t>(oy * 4 + i)] * tx.weight[static_cast<size_t>(ox * 4 + j)];
              const int64_t s = ((b * H + ty.index[static_cast<size_t>(oy * 4 + i)]) * W +
                                 tx.index[static_cast<size_t>(ox * 4 + j)]) * C + c;
              if (adjoint)
                acc[static_cast<size_t>(s)] += w * x.data()[o];
              else
                sum += w * x.data()[s];
            }
          if (!adjoint) y.data()[o] = static_cast<float>(sum);
        }
  if (adjoint)
    for (int64_t i = 0; i < y.numel(); ++i) y.data()[i] = static_cast<float>(acc[static_cast<size_t>(i)]);
}

}  // namespace mf
