// Depthwise convolution, channels-last, computed directly (never im2col).
//
// Every output pixel is a weighted sum of k×k input pixels, each a contiguous run of C channels.
// Stride-1 convolutions (every MetaFormer's) run register-tiled kernels: 7×7 and 3×3 a sliding
// window (8 adjacent outputs × 16 channels, each input vector loaded once per kernel row; see
// window()), other sizes a tile of T = 4 adjacent outputs × 64 channels whose weight vectors, loaded
// once per tap, serve all four outputs. The vectors are GCC/Clang vector extensions, so the same
// code is AVX-512 with -march=native and pairs of AVX2 registers elsewhere. Weights are repacked to
// [kh, kw, C] once and cached on the tensor.
//
// The input gradient of a stride-1 depthwise convolution is the same convolution of dy with the
// kernel flipped and padding k - 1 - p, so the backward pass reuses the tiled kernel. Weight and bias
// gradients sum per-tap products over rows in fixed chunks (cpu/reduce.h), each tap's products over a
// row accumulated in registers.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/onednn.h"
#include "ops/cpu/reduce.h"

namespace mf {

namespace {

using vf = float __attribute__((vector_size(64)));  // 16 floats
constexpr int64_t kLanes = 16;

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// Weights [C, 1, kh, kw] as [kh, kw, C] (flipped in both spatial axes when `flip`), cached.
const float* packed_weights(const Tensor& w, bool flip) {
  const std::string key = flip ? "dw_khwc_flipped" : "dw_khwc";
  auto packed = std::static_pointer_cast<std::vector<float>>(w.derived(key));
  if (!packed) {
    const int64_t C = w.dim(0), kh = w.dim(2), kw = w.dim(3), taps = kh * kw;
    packed = std::make_shared<std::vector<float>>(static_cast<size_t>(taps * C));
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t dst = flip ? taps - 1 - t : t;
        (*packed)[static_cast<size_t>(dst * C + c)] = w.data()[c * taps + t];
      }
    w.set_derived(key, packed);
  }
  return packed->data();
}

struct Geometry {
  int64_t B, H, W, C;    // input
  int64_t Ho, Wo;        // output
  int64_t kh, kw, pad_h, pad_w;
  int64_t out_row0 = 0;  // Y holds output rows (n·Ho + oh) from this one on (a block of rows)
};

// Where output pixel (n, oh, ow) goes.
inline float* out_at(float* Y, const Geometry& g, int64_t n, int64_t oh, int64_t ow) {
  return Y + ((n * g.Ho + oh - g.out_row0) * g.Wo + ow) * g.C;
}

// Outputs [ow0, ow0 + T) of row (n, oh), channels [c0, c0 + 16·NV), stride 1.
template <int T, int NV>
inline void tile(const float* X, const float* Wr, const Geometry& g, const float* bias, int64_t n, int64_t oh,
                 int64_t ow0, int64_t c0, float* Y) {
  vf acc[T][NV];
  for (int v = 0; v < NV; ++v) {
    const vf b = bias ? load(bias + c0 + v * kLanes) : vf{};
    for (int t = 0; t < T; ++t) acc[t][v] = b;
  }
  const bool interior = ow0 - g.pad_w >= 0 && ow0 + T - 1 - g.pad_w + g.kw - 1 < g.W;
  for (int64_t ki = 0; ki < g.kh; ++ki) {
    const int64_t ih = oh - g.pad_h + ki;
    if (ih < 0 || ih >= g.H) continue;
    const float* row = X + ((n * g.H + ih) * g.W) * g.C + c0;
    for (int64_t kj = 0; kj < g.kw; ++kj) {
      vf wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = load(Wr + (ki * g.kw + kj) * g.C + c0 + v * kLanes);
      const int64_t iw0 = ow0 - g.pad_w + kj;
      if (interior) {
        for (int t = 0; t < T; ++t)
          for (int v = 0; v < NV; ++v) acc[t][v] += load(row + (iw0 + t) * g.C + v * kLanes) * wv[v];
      } else {
        for (int t = 0; t < T; ++t) {
          const int64_t iw = iw0 + t;
          if (iw < 0 || iw >= g.W) continue;
          for (int v = 0; v < NV; ++v) acc[t][v] += load(row + iw * g.C + v * kLanes) * wv[v];
        }
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    if (ow0 + t >= g.Wo) break;
    float* out = out_at(Y, g, n, oh, ow0 + t) + c0;
    for (int v = 0; v < NV; ++v) store(out + v * kLanes, acc[t][v]);
  }
}

// Outputs [ow0, ow0 + T) of row (n, oh), channels [c0, c0 + 16), stride 1, kernel width KW known
// at compile time: the sliding window. For each kernel row the T + KW - 1 input vectors are loaded
// once and each serves up to KW outputs, so a tap costs one weight load for T multiply-adds, and the
// inputs 1 + (KW - 1)/T loads per output: ~0.4 loads per multiply-add for 8 x 7, against ~1.25 for
// the 4-output tile above (which reloads every input for every tap). 8 + 14 + 1 vectors fit the 32
// AVX-512 registers.
template <int T, int KW>
inline void window(const float* X, const float* Wr, const Geometry& g, const float* bias, int64_t n, int64_t oh,
                   int64_t ow0, int64_t c0, float* Y) {
  vf acc[T];
  const vf b = bias ? load(bias + c0) : vf{};
  for (int t = 0; t < T; ++t) acc[t] = b;
  const bool interior = ow0 - g.pad_w >= 0 && ow0 - g.pad_w + T + KW - 1 <= g.W;
  for (int64_t ki = 0; ki < g.kh; ++ki) {
    const int64_t ih = oh - g.pad_h + ki;
    if (ih < 0 || ih >= g.H) continue;
    const float* row = X + ((n * g.H + ih) * g.W) * g.C + c0;
    // Fully unrolled (constant indices), so that `in` and `acc` live in registers; an interior
    // window loads without bounds checks.
    vf in[T + KW - 1];
    if (interior) {
      const float* p = row + (ow0 - g.pad_w) * g.C;
#pragma GCC unroll 32
      for (int j = 0; j < T + KW - 1; ++j) in[j] = load(p + j * g.C);
    } else {
#pragma GCC unroll 32
      for (int j = 0; j < T + KW - 1; ++j) {
        const int64_t iw = ow0 - g.pad_w + j;
        in[j] = iw >= 0 && iw < g.W ? load(row + iw * g.C) : vf{};
      }
    }
    const float* wrow = Wr + ki * KW * g.C + c0;
#pragma GCC unroll 16
    for (int kj = 0; kj < KW; ++kj) {
      const vf wv = load(wrow + kj * g.C);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) acc[t] += in[t + kj] * wv;
    }
  }
  for (int t = 0; t < T; ++t) {
    if (ow0 + t >= g.Wo) break;
    store(out_at(Y, g, n, oh, ow0 + t) + c0, acc[t]);
  }
}

// Channels [c0, C) of one output pixel, any stride: the plain loop (tails and strided convolutions).
inline void pixel(const float* X, const float* Wr, const Geometry& g, int64_t stride_h, int64_t stride_w,
                  const float* bias, int64_t n, int64_t oh, int64_t ow, int64_t c0, float* Y) {
  float* out = out_at(Y, g, n, oh, ow);
  for (int64_t c = c0; c < g.C; ++c) out[c] = bias ? bias[c] : 0.f;
  for (int64_t ki = 0; ki < g.kh; ++ki) {
    const int64_t ih = oh * stride_h - g.pad_h + ki;
    if (ih < 0 || ih >= g.H) continue;
    for (int64_t kj = 0; kj < g.kw; ++kj) {
      const int64_t iw = ow * stride_w - g.pad_w + kj;
      if (iw < 0 || iw >= g.W) continue;
      const float* xp = X + ((n * g.H + ih) * g.W + iw) * g.C;
      const float* wp = Wr + (ki * g.kw + kj) * g.C;
#pragma omp simd
      for (int64_t c = c0; c < g.C; ++c) out[c] += xp[c] * wp[c];
    }
  }
}

// Output rows [r0, r1) (row = n·Ho + oh) of Y = depthwise(X) with packed weights Wr; stride 1
// takes the tiled paths. Y is indexed from g.out_row0.
void depthwise_rows(const float* X, const float* Wr, const float* bias, const Geometry& g, int64_t stride_h,
                    int64_t stride_w, int64_t r0, int64_t r1, float* Y) {
  constexpr int T = 4;
  const bool tiled = stride_h == 1 && stride_w == 1;
  if (tiled && (g.kw == 7 || g.kw == 3) && g.C >= 16) {  // the sliding window (MetaFormers' 7x7, and 3x3)
    constexpr int TW = 8;
    const int64_t c16 = g.C / 16 * 16;
#pragma omp parallel for schedule(static)
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / g.Ho, oh = r % g.Ho;
      for (int64_t c0 = 0; c0 < c16; c0 += 16)
        for (int64_t ow0 = 0; ow0 < g.Wo; ow0 += TW) {
          if (g.kw == 7)
            window<TW, 7>(X, Wr, g, bias, n, oh, ow0, c0, Y);
          else
            window<TW, 3>(X, Wr, g, bias, n, oh, ow0, c0, Y);
        }
      if (c16 < g.C)
        for (int64_t ow = 0; ow < g.Wo; ++ow) pixel(X, Wr, g, 1, 1, bias, n, oh, ow, c16, Y);
    }
    return;
  }
  const int64_t c64 = tiled ? g.C / 64 * 64 : 0;                  // channels in 4-vector groups
  const int64_t c16 = tiled ? c64 + (g.C - c64) / 16 * 16 : 0;    // then single vectors
#pragma omp parallel for schedule(static)
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.Ho, oh = r % g.Ho;
    if (tiled) {
      for (int64_t ow0 = 0; ow0 < g.Wo; ow0 += T) {
        for (int64_t c0 = 0; c0 < c64; c0 += 64) tile<T, 4>(X, Wr, g, bias, n, oh, ow0, c0, Y);
        for (int64_t c0 = c64; c0 < c16; c0 += 16) tile<T, 1>(X, Wr, g, bias, n, oh, ow0, c0, Y);
      }
    }
    if (c16 < g.C)
      for (int64_t ow = 0; ow < g.Wo; ++ow) pixel(X, Wr, g, stride_h, stride_w, bias, n, oh, ow, c16, Y);
  }
}

void depthwise(const float* X, const float* Wr, const float* bias, const Geometry& g, int64_t stride_h,
               int64_t stride_w, float* Y) {
  depthwise_rows(X, Wr, bias, g, stride_h, stride_w, 0, g.B * g.Ho, Y);
}

}  // namespace

void CpuBackend::depthwise_conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g,
                                  Tensor& y) {
  const Geometry geo{x.dim(0), x.dim(1),  x.dim(2),  x.dim(3), y.dim(1),
                     y.dim(2), g.kernel_h, g.kernel_w, g.pad_h,  g.pad_w};
  depthwise(x.data(), packed_weights(w, false), b ? b->data() : nullptr, geo, g.stride_h, g.stride_w, y.data());
}

// ConvFormer's dwconv → pwconv2: blocks of output image rows go through the depthwise kernel into a
// scratch buffer sized for the cache (rounded to bf16 there in bf16 precision) and straight into the
// GEMM, so the depthwise output (2× the model width) never travels to memory and back.
void CpuBackend::depthwise_linear(const Tensor& x, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                                  const Tensor& w, const Tensor* b, Tensor& y) {
  Geometry geo{x.dim(0), x.dim(1),  x.dim(2),  x.dim(3), g.out_h(x.dim(1)),
               g.out_w(x.dim(2)), g.kernel_h, g.kernel_w, g.pad_h,  g.pad_w};
  const int64_t C = geo.C, N = w.dim(0), rows = geo.B * geo.Ho, pixels_per_row = geo.Wo;
  const bool bf16 = precision_ == Precision::bf16;
  // Image rows per block: the block's depthwise output near 512 KB, and at least two rows so that
  // both threads have work.
  constexpr int64_t kBlockBytes = 512 * 1024;
  const int64_t step = std::max<int64_t>(2, kBlockBytes / (pixels_per_row * C * 4));
  const float* Wr = packed_weights(dw_w, false);
  auto* block = static_cast<float*>(onednn::scratch(onednn::Scratch::dw_block, step * pixels_per_row * C * 4));
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    const int64_t r1 = std::min(rows, r0 + step), m = (r1 - r0) * pixels_per_row;
    geo.out_row0 = r0;
    depthwise_rows(x.data(), Wr, dw_b ? dw_b->data() : nullptr, geo, g.stride_h, g.stride_w, r0, r1, block);
    const void* src = bf16 ? onednn::bf16_scratch(onednn::Scratch::linear_src, block, m * C) : block;
    cpu::gemm_rows({src, bf16, m, w, b, nullptr, y.data() + r0 * pixels_per_row * N, false});
  }
}

void CpuBackend::depthwise_conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                                           Tensor* dx, Tensor* dw, Tensor* db) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t Ho = dy.dim(1), Wo = dy.dim(2);
  const int64_t kh = g.kernel_h, kw = g.kernel_w, taps = kh * kw;
  const float* X = x.data();
  const float* G = dy.data();
  if (dx) {
    if (g.stride_h == 1 && g.stride_w == 1) {
      // dx = dy convolved with the flipped kernel, padding k - 1 - p, output H × W.
      const Geometry geo{B, Ho, Wo, C, H, W, kh, kw, kh - 1 - g.pad_h, kw - 1 - g.pad_w};
      depthwise(G, packed_weights(w, true), nullptr, geo, 1, 1, dx->data());
    } else {
      RefBackend::depthwise_conv2d_backward(x, w, g, dy, dx, nullptr, nullptr);
    }
  }
  if (!dw && !db) return;
  // Partials: [taps · C] weight gradient then [C] bias gradient, over output rows (n, oh).
  std::vector<float> sums(static_cast<size_t>((taps + 1) * C), 0.f);
  const int64_t sh = g.stride_h, sw = g.stride_w, ph = g.pad_h, pw = g.pad_w;
  cpu::chunked_sum(B * Ho, (taps + 1) * C, sums.data(), [=](float* __restrict acc, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / Ho, oh = r % Ho;
      const float* grow = G + (n * Ho + oh) * Wo * C;
      float* bacc = acc + taps * C;
      for (int64_t ow = 0; ow < Wo; ++ow) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) bacc[c] += grow[ow * C + c];
      }
      for (int64_t ki = 0; ki < kh; ++ki) {
        const int64_t ih = oh * sh - ph + ki;
        if (ih < 0 || ih >= H) continue;
        const float* xrow = X + (n * H + ih) * W * C;
        for (int64_t kj = 0; kj < kw; ++kj) {
          // Outputs whose input column ow·sw - pw + kj lies inside the row.
          const int64_t lo = std::max<int64_t>(0, (pw - kj + sw - 1) / sw);
          const int64_t hi = std::min<int64_t>(Wo, (W - 1 + pw - kj) / sw + 1);
          float* wacc = acc + (ki * kw + kj) * C;
          int64_t c = 0;
          // Four independent accumulators hide the multiply-add latency.
          for (; c + 4 * kLanes <= C; c += 4 * kLanes) {
            vf s0{}, s1{}, s2{}, s3{};
            for (int64_t ow = lo; ow < hi; ++ow) {
              const float* gp = grow + ow * C + c;
              const float* xp = xrow + (ow * sw - pw + kj) * C + c;
              s0 += load(gp) * load(xp);
              s1 += load(gp + kLanes) * load(xp + kLanes);
              s2 += load(gp + 2 * kLanes) * load(xp + 2 * kLanes);
              s3 += load(gp + 3 * kLanes) * load(xp + 3 * kLanes);
            }
            store(wacc + c, load(wacc + c) + s0);
            store(wacc + c + kLanes, load(wacc + c + kLanes) + s1);
            store(wacc + c + 2 * kLanes, load(wacc + c + 2 * kLanes) + s2);
            store(wacc + c + 3 * kLanes, load(wacc + c + 3 * kLanes) + s3);
          }
          for (; c + kLanes <= C; c += kLanes) {
            vf s{};
            for (int64_t ow = lo; ow < hi; ++ow)
              s += load(grow + ow * C + c) * load(xrow + (ow * sw - pw + kj) * C + c);
            store(wacc + c, load(wacc + c) + s);
          }
          for (; c < C; ++c)
            for (int64_t ow = lo; ow < hi; ++ow) wacc[c] += grow[ow * C + c] * xrow[(ow * sw - pw + kj) * C + c];
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

}  // namespace mf
