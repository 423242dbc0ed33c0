// Layout ops: an axis permutation and MS-MLP's grouped cyclic shift, as plain index arithmetic.
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

}  // namespace mf
