// Depthwise convolution, channels-last, computed directly (never im2col): every output pixel is a
// weighted sum of k×k input pixels, each a contiguous run of C channels, so the inner loop runs over
// channels with the weights repacked to [kh, kw, C] and vectorises. Channels go in blocks of 64
// (four AVX-512 registers of accumulators).
#include <algorithm>
#include <memory>
#include <vector>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/reduce.h"

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


// dx: each input pixel gathers dy from the outputs whose window covers it (no scattering, so rows run
// in parallel without races); dW and db: per-pixel products summed in fixed chunks (cpu/reduce.h).
void CpuBackend::depthwise_conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                                           Tensor* dx, Tensor* dw, Tensor* db) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t Ho = dy.dim(1), Wo = dy.dim(2);
  const int64_t kh = g.kernel_h, kw = g.kernel_w, taps = kh * kw;
  auto packed = std::static_pointer_cast<std::vector<float>>(w.derived("dw_khwc"));
  if (!packed) {
    packed = std::make_shared<std::vector<float>>(static_cast<size_t>(taps * C));
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t) (*packed)[static_cast<size_t>(t * C + c)] = w.data()[c * taps + t];
    w.set_derived("dw_khwc", packed);
  }
  const float* Wr = packed->data();
  const float* X = x.data();
  const float* G = dy.data();
  if (dx) {
    float* D = dx->data();
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < B; ++n)
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw) {
          float* out = D + ((n * H + ih) * W + iw) * C;
          for (int64_t c = 0; c < C; ++c) out[c] = 0.f;
          for (int64_t ki = 0; ki < kh; ++ki) {
            const int64_t t = ih + g.pad_h - ki;  // = oh · stride
            if (t < 0 || t % g.stride_h) continue;
            const int64_t oh = t / g.stride_h;
            if (oh >= Ho) continue;
            for (int64_t kj = 0; kj < kw; ++kj) {
              const int64_t u = iw + g.pad_w - kj;
              if (u < 0 || u % g.stride_w) continue;
              const int64_t ow = u / g.stride_w;
              if (ow >= Wo) continue;
              const float* gp = G + ((n * Ho + oh) * Wo + ow) * C;
              const float* wp = Wr + (ki * kw + kj) * C;
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) out[c] += gp[c] * wp[c];
            }
          }
        }
  }
  if (dw || db) {
    // Partials: [taps · C] weight gradient then [C] bias gradient, over output rows (n, oh).
    std::vector<float> sums(static_cast<size_t>((taps + 1) * C), 0.f);
    cpu::chunked_sum(B * Ho, (taps + 1) * C, sums.data(), [&, X, G](float* __restrict acc, int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / Ho, oh = r % Ho;
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const float* gp = G + ((n * Ho + oh) * Wo + ow) * C;
          float* bacc = acc + taps * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) bacc[c] += gp[c];
          for (int64_t ki = 0; ki < kh; ++ki) {
            const int64_t ih = oh * g.stride_h - g.pad_h + ki;
            if (ih < 0 || ih >= H) continue;
            for (int64_t kj = 0; kj < kw; ++kj) {
              const int64_t iw = ow * g.stride_w - g.pad_w + kj;
              if (iw < 0 || iw >= W) continue;
              const float* xp = X + ((n * H + ih) * W + iw) * C;
              float* wacc = acc + (ki * kw + kj) * C;
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) wacc[c] += gp[c] * xp[c];
            }
          }
        }
      }
    });
    if (dw)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < taps; ++t) dw->data()[c * taps + t] += sums[static_cast<size_t>(t * C + c)];
    if (db)
      for (int64_t c = 0; c < C; ++c) db->data()[c] += sums[static_cast<size_t>(taps * C + c)];
  }
}

}  // namespace mf
