// Layout ops on the CPU, parallel over output rows. permute copies runs of the output's last axis:
// with memcpy when that axis is also the input's last (a reordering of whole channel vectors), else
// with a strided gather. spatial_shift moves each channel group of a position as one memcpy.
#include <algorithm>
#include <cstring>

#include "ops/cpu/cpu_backend.h"

namespace mf {

void CpuBackend::permute(const Tensor& x, const std::vector<int>& perm, Tensor& y) {
  const int rank = x.ndim();
  int64_t in_stride[Shape::kMaxDims];
  in_stride[rank - 1] = 1;
  for (int a = rank - 2; a >= 0; --a) in_stride[a] = in_stride[a + 1] * x.dim(a + 1);
  int64_t stride[Shape::kMaxDims];  // input stride of each output axis
  for (int a = 0; a < rank; ++a) stride[a] = in_stride[perm[static_cast<size_t>(a)]];
  const int64_t inner = y.dim(rank - 1), rows = y.numel() / inner, inner_stride = stride[rank - 1];
  const float* src = x.data();
  float* dst = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rest = r, from = 0;
    for (int a = rank - 2; a >= 0; --a) {
      const int64_t i = rest % y.dim(a);
      rest /= y.dim(a);
      from += i * stride[a];
    }
    float* out = dst + r * inner;
    if (inner_stride == 1) {
      std::memcpy(out, src + from, static_cast<size_t>(inner) * sizeof(float));
    } else {
      for (int64_t j = 0; j < inner; ++j) out[j] = src[from + j * inner_stride];
    }
  }
}

void CpuBackend::spatial_shift(const Tensor& x, int axis, int64_t group_width, const std::vector<int>& shifts,
                               Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t n = axis == 1 ? H : W, groups = (C + group_width - 1) / group_width;
  const float* src = x.data();
  float* dst = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    for (int64_t w = 0; w < W; ++w) {
      float* out = dst + (bh * W + w) * C;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * group_width, width = std::min(group_width, C - c0);
        const int64_t s = shifts[static_cast<size_t>(g)];
        const int64_t i = axis == 1 ? h : w;
        const int64_t from = ((i - s) % n + n) % n;
        const int64_t sh = axis == 1 ? from : h, sw = axis == 1 ? w : from;
        std::memcpy(out + c0, src + ((b * H + sh) * W + sw) * C + c0, static_cast<size_t>(width) * sizeof(float));
      }
    }
  }
}

}  // namespace mf
