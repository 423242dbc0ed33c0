// PoolFormer's token mixer, fused: avg_pool_k(x) - x in one pass over channels-last data, with
// PyTorch's count_include_pad=False divisor (border windows average only their in-bounds cells).
#include <algorithm>

#include "ops/cpu/cpu_backend.h"

namespace mf {

void CpuBackend::pool_minus_input(const Tensor& x, int kernel, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t pad = kernel / 2;
  const float* X = x.data();
  float* Y = y.data();
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
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) out[c] = out[c] * inv - self[c];
      }
    }
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
