// Layout ops on the CPU. permute first merges axes that stay neighbours, then copies whole runs of the
// last axis with memcpy when that axis stays last, and otherwise transposes the two axes that change
// places in cache-sized tiles, parallel over the other axes. spatial_shift moves each channel group of a position as one memcpy.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/bicubic_taps.h"
#include "ops/cpu/cpu_backend.h"

namespace mf {

void CpuBackend::permute(const Tensor& x, const std::vector<int>& perm, Tensor& y) {
  const int rank = x.ndim();
  int64_t in_stride[Shape::kMaxDims];
  in_stride[rank - 1] = 1;
  for (int a = rank - 2; a >= 0; --a) in_stride[a] = in_stride[a + 1] * x.dim(a + 1);
  // Output axes that are also neighbours, in the same order, in the input merge into one (RaftMLP's
  // [B, H, W, C/r, r] -> [B, W, C/r, r, H] is a transpose of H and the C/r·r channels).
  int n = 0;
  int64_t dim[Shape::kMaxDims], stride[Shape::kMaxDims];  // per merged output axis: size, input stride
  for (int a = 0; a < rank; ++a) {
    const int64_t d = y.dim(a), st = in_stride[perm[static_cast<size_t>(a)]];
    if (n > 0 && stride[n - 1] == st * d) {
      dim[n - 1] *= d;
      stride[n - 1] = st;
    } else {
      dim[n] = d;
      stride[n++] = st;
    }
  }
  int64_t out_stride[Shape::kMaxDims];
  out_stride[n - 1] = 1;
  for (int a = n - 2; a >= 0; --a) out_stride[a] = out_stride[a + 1] * dim[a + 1];
  int q = n - 1;  // the merged output axis read with input stride 1
  for (int a = 0; a < n; ++a)
    if (stride[a] == 1) q = a;
  const float* src = x.data();
  float* dst = y.data();
  const int64_t inner = dim[n - 1];
  if (q == n - 1) {  // whole runs of the last axis move: one memcpy each
    const int64_t rows = y.numel() / inner;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      int64_t rest = r, from = 0;
      for (int a = n - 2; a >= 0; --a) {
        from += (rest % dim[a]) * stride[a];
        rest /= dim[a];
      }
      std::memcpy(dst + r * inner, src + from, static_cast<size_t>(inner) * sizeof(float));
    }
    return;
  }
  // A transpose of axes q and last (for every index of the others), in 32×32 tiles so that both the
  // reads (contiguous along q) and the writes (contiguous along the last axis) stay in cache.
  constexpr int64_t kTile = 32;
  const int64_t nq = dim[q], sl = stride[n - 1], yq = out_stride[q];
  const int64_t outer = y.numel() / (nq * inner);
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < outer; ++o) {
    int64_t rest = o, from = 0, to = 0;
    for (int a = n - 2; a >= 0; --a) {
      if (a == q) continue;
      const int64_t i = rest % dim[a];
      rest /= dim[a];
      from += i * stride[a];
      to += i * out_stride[a];
    }
    for (int64_t i0 = 0; i0 < nq; i0 += kTile)
      for (int64_t j0 = 0; j0 < inner; j0 += kTile) {
        const int64_t i1 = std::min(nq, i0 + kTile), j1 = std::min(inner, j0 + kTile);
        for (int64_t i = i0; i < i1; ++i) {
          float* out = dst + to + i * yq;
          const float* in = src + from + i;
          for (int64_t j = j0; j < j1; ++j) out[j] = in[j * sl];
        }
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

// Separable: along W into a [B, H, Wo, C] buffer, then along H; each step a 4-tap weighted sum of
// whole channel vectors. The adjoint runs the transposed steps in the reverse order, each parallel
// over the lines it writes (no two threads add into one row).
void CpuBackend::resize_bicubic(const Tensor& x, bool adjoint, Tensor& y) {
  const Tensor& in = adjoint ? y : x;
  const Tensor& out = adjoint ? x : y;
  const int64_t B = in.dim(0), H = in.dim(1), W = in.dim(2), C = in.dim(3), Ho = out.dim(1), Wo = out.dim(2);
  const BicubicTaps ty = bicubic_taps(H, Ho), tx = bicubic_taps(W, Wo);
  std::vector<float> wy(ty.weight.begin(), ty.weight.end()), wx(tx.weight.begin(), tx.weight.end());
  std::vector<float> tmp(static_cast<size_t>(B * H * Wo * C), 0.f);
  float* t = tmp.data();
  if (!adjoint) {
    const float* src = x.data();
#pragma omp parallel for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh)
      for (int64_t ox = 0; ox < Wo; ++ox) {
        float* o = t + (bh * Wo + ox) * C;
        for (int j = 0; j < 4; ++j) {
          const float w = wx[static_cast<size_t>(ox * 4 + j)];
          const float* s = src + (bh * W + tx.index[static_cast<size_t>(ox * 4 + j)]) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) o[c] += w * s[c];
        }
      }
    float* dst = y.data();
#pragma omp parallel for schedule(static)
    for (int64_t by = 0; by < B * Ho; ++by) {
      const int64_t b = by / Ho, oy = by % Ho;
      float* o = dst + by * Wo * C;
      std::fill(o, o + Wo * C, 0.f);
      for (int i = 0; i < 4; ++i) {
        const float w = wy[static_cast<size_t>(oy * 4 + i)];
        const float* s = t + (b * H + ty.index[static_cast<size_t>(oy * 4 + i)]) * Wo * C;
#pragma omp simd
        for (int64_t k = 0; k < Wo * C; ++k) o[k] += w * s[k];
      }
    }
    return;
  }
  // Adjoint: x is dy [B, Ho, Wo, C], y is dx [B, H, W, C].
  const float* dy = x.data();
#pragma omp parallel for schedule(static)
  for (int64_t bx = 0; bx < B * Wo; ++bx) {  // transpose of the H step, one output column each
    const int64_t b = bx / Wo, ox = bx % Wo;
    for (int64_t oy = 0; oy < Ho; ++oy) {
      const float* g = dy + ((b * Ho + oy) * Wo + ox) * C;
      for (int i = 0; i < 4; ++i) {
        const float w = wy[static_cast<size_t>(oy * 4 + i)];
        float* o = t + ((b * H + ty.index[static_cast<size_t>(oy * 4 + i)]) * Wo + ox) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] += w * g[c];
      }
    }
  }
  float* dx = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < B * H; ++bh) {  // transpose of the W step, one input row each
    float* o = dx + bh * W * C;
    std::fill(o, o + W * C, 0.f);
    for (int64_t ox = 0; ox < Wo; ++ox) {
      const float* g = t + (bh * Wo + ox) * C;
      for (int j = 0; j < 4; ++j) {
        const float w = wx[static_cast<size_t>(ox * 4 + j)];
        float* d = o + tx.index[static_cast<size_t>(ox * 4 + j)] * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) d[c] += w * g[c];
      }
    }
  }
}

}  // namespace mf
