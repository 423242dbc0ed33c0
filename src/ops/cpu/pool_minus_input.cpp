// PoolFormer's token mixer, fused: avg_pool_k(x) - x in one pass over channels-last data, with
// PyTorch's count_include_pad=False divisor (border windows average only their in-bounds cells);
// and at inference the whole first half of its block (norm, mixer, residual) as one op.
#include <algorithm>
#include <vector>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/norm_affine.h"

namespace mf {

namespace {
// For each output pixel: the sum of its k×k window's in-bounds input vectors into out[0..C), then
// finish(n, out, self, 1/count) turns that sum into the op's output (self: the input at the pixel).
template <typename Finish>
void pool_windows(const Tensor& x, int kernel, float* Y, Finish&& finish) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t pad = kernel / 2;
  const float* X = x.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t h0 = std::max<int64_t>(0, h - pad), h1 = std::min<int64_t>(H, h - pad + kernel);
      for (int64_t w = 0; w < W; ++w) {
        const int64_t w0 = std::max<int64_t>(0, w - pad), w1 = std::min<int64_t>(W, w - pad + kernel);
        const float inv = 1.f / static_cast<float>((h1 - h0) * (w1 - w0));
        float* out = Y + ((n * H + h) * W + w) * C;
        const float* self = X + ((n * H + h) * W + w) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) out[c] = 0.f;
        for (int64_t i = h0; i < h1; ++i)
          for (int64_t j = w0; j < w1; ++j) {
            const float* xp = X + ((n * H + i) * W + j) * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) out[c] += xp[c];
          }
        finish(n, out, self, inv);
      }
    }
}
}  // namespace

void CpuBackend::pool_minus_input(const Tensor& x, int kernel, Tensor& y) {
  const int64_t C = x.dim(3);
  pool_windows(x, kernel, y.data(), [C](int64_t, float* out, const float* self, float inv) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) out[c] = out[c] * inv - self[c];
  });
}

// GroupNorm is a per-sample affine map n = x·a + shift, and the average of an affine map is the
// affine map of the average, so pool(n) − n = a ⊙ (pool(x) − x): the shift cancels and the norm
// never has to be written out. One pass for the statistics, one for everything else.
void CpuBackend::pool_branch(const Tensor& x, const BranchNorm& norm, int kernel, const BranchScales& scales,
                             Tensor& y) {
  const int64_t B = x.dim(0), C = x.dim(3);
  std::vector<float> a(static_cast<size_t>(B * C));
  cpu::group_norm1_affine(x, *norm.weight, norm.bias, norm.eps, a.data(), nullptr);
  // A missing scale is 1, and multiplying by 1 is exact: one loop for every combination.
  const std::vector<float> ones(static_cast<size_t>(C), 1.f);
  const float* rs = scales.res_scale ? scales.res_scale->data() : ones.data();
  const float* ls = scales.layer_scale ? scales.layer_scale->data() : ones.data();
  const float* A = a.data();
  pool_windows(x, kernel, y.data(), [=](int64_t n, float* out, const float* self, float inv) {
    const float* an = A + n * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) out[c] = self[c] * rs[c] + an[c] * (out[c] * inv - self[c]) * ls[c];
  });
}

// dx[i] = Σ over the windows that contain i of dy[o] / count(o), minus dy[i]. The windows are
// symmetric (odd k, padding k/2), so the outputs whose window holds i are exactly i's own window.
void CpuBackend::pool_minus_input_backward(const Tensor& dy, int kernel, Tensor& dx) {
  const int64_t B = dy.dim(0), H = dy.dim(1), W = dy.dim(2), C = dy.dim(3);
  const int64_t pad = kernel / 2;
  // g[o] = dy[o] / count(o), written into dx's buffer's neighbour: a scratch tensor.
  Tensor scaled = Tensor::empty(dy.shape());
  const float* G = dy.data();
  float* S = scaled.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t rows = std::min<int64_t>(H, h - pad + kernel) - std::max<int64_t>(0, h - pad);
      for (int64_t w = 0; w < W; ++w) {
        const int64_t cols = std::min<int64_t>(W, w - pad + kernel) - std::max<int64_t>(0, w - pad);
        const float inv = 1.f / static_cast<float>(rows * cols);
        const int64_t at = ((n * H + h) * W + w) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) S[at + c] = G[at + c] * inv;
      }
    }
  float* D = dx.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t h0 = std::max<int64_t>(0, h - pad), h1 = std::min<int64_t>(H, h - pad + kernel);
      for (int64_t w = 0; w < W; ++w) {
        const int64_t w0 = std::max<int64_t>(0, w - pad), w1 = std::min<int64_t>(W, w - pad + kernel);
        float* out = D + ((n * H + h) * W + w) * C;
        const float* self = G + ((n * H + h) * W + w) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) out[c] = -self[c];
        for (int64_t i = h0; i < h1; ++i)
          for (int64_t j = w0; j < w1; ++j) {
            const float* sp = S + ((n * H + i) * W + j) * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) out[c] += sp[c];
          }
      }
    }
}

}  // namespace mf
