// Max pooling, non-overlapping sum pooling and nearest upsampling, channels-last: the channel loop
// innermost (contiguous, vectorised), rows in parallel. Max pooling's backward parallelises over
// (sample, channel block) so that overlapping windows never write the same gradient concurrently.
#include <algorithm>
#include <limits>

#include "ops/cpu/cpu_backend.h"

namespace mf {

void CpuBackend::max_pool2d(const Tensor& x, const ConvGeometry& g, Tensor& y) {
  const int64_t B = y.dim(0), Ho = y.dim(1), Wo = y.dim(2), C = y.dim(3), H = x.dim(1), W = x.dim(2);
  const float* X = x.data();
  float* Y = y.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        float* out = Y + ((n * Ho + oh) * Wo + ow) * C;
        std::fill(out, out + C, -std::numeric_limits<float>::infinity());
        for (int ki = 0; ki < g.kernel_h; ++ki) {
          const int64_t i = oh * g.stride_h - g.pad_h + ki;
          if (i < 0 || i >= H) continue;
          for (int kj = 0; kj < g.kernel_w; ++kj) {
            const int64_t j = ow * g.stride_w - g.pad_w + kj;
            if (j < 0 || j >= W) continue;
            const float* in = X + ((n * H + i) * W + j) * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) out[c] = std::max(out[c], in[c]);
          }
        }
      }
}

void CpuBackend::max_pool2d_backward(const Tensor& x, const ConvGeometry& g, const Tensor& dy, Tensor& dx) {
  const int64_t B = dy.dim(0), Ho = dy.dim(1), Wo = dy.dim(2), C = dy.dim(3), H = x.dim(1), W = x.dim(2);
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (C + kBlock - 1) / kBlock;
  const float* X = x.data();
  const float* G = dy.data();
  float* D = dx.data();
  std::fill(D, D + dx.numel(), 0.f);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t cb = 0; cb < blocks; ++cb) {
      const int64_t c0 = cb * kBlock, c1 = std::min(C, c0 + kBlock);
      int64_t best[kBlock];
      float best_value[kBlock] = {};
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          for (int64_t c = c0; c < c1; ++c) best[c - c0] = -1;
          for (int ki = 0; ki < g.kernel_h; ++ki) {
            const int64_t i = oh * g.stride_h - g.pad_h + ki;
            if (i < 0 || i >= H) continue;
            for (int kj = 0; kj < g.kernel_w; ++kj) {
              const int64_t j = ow * g.stride_w - g.pad_w + kj;
              if (j < 0 || j >= W) continue;
              const int64_t base = ((n * H + i) * W + j) * C;
              for (int64_t c = c0; c < c1; ++c)  // strictly greater: the first maximum wins, as PyTorch's
                if (best[c - c0] < 0 || X[base + c] > best_value[c - c0])
                  best[c - c0] = base + c, best_value[c - c0] = X[base + c];
            }
          }
          const float* grad = G + ((n * Ho + oh) * Wo + ow) * C;
          for (int64_t c = c0; c < c1; ++c) D[best[c - c0]] += grad[c];
        }
    }
}

void CpuBackend::sum_pool2d(const Tensor& x, int factor, float scale, Tensor& y) {
  const int64_t B = y.dim(0), h = y.dim(1), w = y.dim(2), C = y.dim(3), H = x.dim(1), W = x.dim(2);
  const float* X = x.data();
  float* Y = y.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        float* out = Y + ((n * h + i) * w + j) * C;
        std::fill(out, out + C, 0.f);
        for (int a = 0; a < factor; ++a)
          for (int b = 0; b < factor; ++b) {
            const float* in = X + ((n * H + i * factor + a) * W + j * factor + b) * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) out[c] += in[c];
          }
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) out[c] *= scale;
      }
}

void CpuBackend::upsample_nearest(const Tensor& x, int factor, float scale, Tensor& y) {
  const int64_t B = y.dim(0), H = y.dim(1), W = y.dim(2), C = y.dim(3), h = x.dim(1), w = x.dim(2);
  const float* X = x.data();
  float* Y = y.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j) {
        const float* in = X + ((n * h + i / factor) * w + j / factor) * C;
        float* out = Y + ((n * H + i) * W + j) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) out[c] = scale * in[c];
      }
}

}  // namespace mf
