// iFormer's and WaveMix's pooling ops: max pooling (and its backward), non-overlapping sum pooling,
// nearest upsampling, and the weight layout of the transposed convolution (whose products are
// cuBLASLt's and whose scatter is col2im, ../conv_backward.cu).
#include "ops/cuda/backward_common.cuh"
#include "ops/cuda/families/family_kernels.h"

namespace mf::cuda::families {
namespace {

using backward::detail::blocks_for;
using backward::detail::dptr;
using backward::detail::kThreads;
using backward::detail::ld;
using backward::detail::narrow;

// The offset of the maximum of output (b, oh, ow)'s window for channel c: the first in row-major
// window order among equals, never the padding (PyTorch's rule, as the reference backend's); -1 for
// a window with no pixel inside.
template <class T>
__device__ int64_t window_argmax(const T* x, int64_t b, int64_t oh, int64_t ow, int64_t c, int64_t H, int64_t W,
                                 int64_t C, const Window& g) {
  int64_t best = -1;
  float best_value = -INFINITY;
  for (int ki = 0; ki < g.kh; ++ki) {
    const int64_t i = oh * g.sh - g.ph + ki;
    if (i < 0 || i >= H) continue;
    for (int kj = 0; kj < g.kw; ++kj) {
      const int64_t j = ow * g.sw - g.pw + kj;
      if (j < 0 || j >= W) continue;
      const int64_t at = ((b * H + i) * W + j) * C + c;
      const float v = ld(x[at]);
      if (best < 0 || v > best_value) best = at, best_value = v;
    }
  }
  return best;
}

template <class T>
__global__ void max_pool_kernel(const T* x, T* y, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, Window g,
                                int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % C;
    int64_t r = i / C;
    const int64_t ow = r % Wo;
    r /= Wo;
    const int64_t oh = r % Ho, b = r / Ho;
    const int64_t at = window_argmax(x, b, oh, ow, c, H, W, C, g);
    y[i] = at < 0 ? narrow<T>(-INFINITY) : x[at];
  }
}

// Floor division for a possibly negative numerator and a positive divisor.
__device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// dx of pixel (b, i, j, c): dy of every window holding it whose maximum it is, in window order.
template <class T>
__global__ void max_pool_backward_kernel(const T* x, const T* dy, T* dx, int64_t H, int64_t W, int64_t C, int64_t Ho,
                                         int64_t Wo, Window g, int64_t n) {
  MF_GRID_STRIDE(e, n) {
    const int64_t c = e % C;
    int64_t r = e / C;
    const int64_t j = r % W;
    r /= W;
    const int64_t i = r % H, b = r / H;
    // Windows oh with oh·sh − ph ≤ i ≤ oh·sh − ph + kh − 1.
    const int64_t oh0 = max(int64_t{0}, floor_div(i + g.ph - g.kh, g.sh) + 1), oh1 = min(Ho - 1, floor_div(i + g.ph, g.sh));
    const int64_t ow0 = max(int64_t{0}, floor_div(j + g.pw - g.kw, g.sw) + 1), ow1 = min(Wo - 1, floor_div(j + g.pw, g.sw));
    double sum = 0;
    for (int64_t oh = oh0; oh <= oh1; ++oh)
      for (int64_t ow = ow0; ow <= ow1; ++ow)
        if (window_argmax(x, b, oh, ow, c, H, W, C, g) == e) sum += ld(dy[((b * Ho + oh) * Wo + ow) * C + c]);
    dx[e] = narrow<T>(static_cast<float>(sum));
  }
}

template <class T>
__global__ void sum_pool_kernel(const T* x, T* y, int64_t H, int64_t W, int64_t C, int f, float scale, int64_t n) {
  const int64_t h = H / f, w = W / f;
  MF_GRID_STRIDE(e, n) {
    const int64_t c = e % C;
    int64_t r = e / C;
    const int64_t j = r % w;
    r /= w;
    const int64_t i = r % h, b = r / h;
    double acc = 0;
    for (int a = 0; a < f; ++a)
      for (int q = 0; q < f; ++q) acc += ld(x[((b * H + i * f + a) * W + j * f + q) * C + c]);
    y[e] = narrow<T>(static_cast<float>(scale * acc));
  }
}

template <class T>
__global__ void upsample_kernel(const T* x, T* y, int64_t h, int64_t w, int64_t C, int f, float scale, int64_t n) {
  const int64_t H = h * f, W = w * f;
  MF_GRID_STRIDE(e, n) {
    const int64_t c = e % C;
    int64_t r = e / C;
    const int64_t j = r % W;
    r /= W;
    const int64_t i = r % H, b = r / H;
    y[e] = narrow<T>(scale * ld(x[((b * h + i / f) * w + j / f) * C + c]));
  }
}

template <class O>
__global__ void conv_transpose_weight_kernel(const float* w, O* wg, int64_t Ci, int64_t Co, int kh, int kw,
                                             int64_t n) {
  MF_GRID_STRIDE(e, n) {  // e indexes wg [(ky, kx, co), ci]
    const int64_t ci = e % Ci;
    int64_t r = e / Ci;
    const int64_t co = r % Co;
    r /= Co;
    const int64_t kx = r % kw, ky = r / kw;
    wg[e] = narrow<O>(w[((ci * Co + co) * kh + ky) * kw + kx]);
  }
}

}  // namespace

template <class T>
cudaError_t max_pool2d(const T* x, T* y, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo,
                       Window g, cudaStream_t s) {
  if (g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1) return cudaErrorInvalidValue;
  const int64_t n = B * Ho * Wo * C;
  if (n <= 0) return cudaSuccess;
  max_pool_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), H, W, C, Ho, Wo, g, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t max_pool2d_backward(const T* x, const T* dy, T* dx, int64_t B, int64_t H, int64_t W, int64_t C,
                                int64_t Ho, int64_t Wo, Window g, cudaStream_t s) {
  if (g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1) return cudaErrorInvalidValue;
  const int64_t n = B * H * W * C;
  if (n <= 0) return cudaSuccess;
  max_pool_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(dy), dptr(dx), H, W, C, Ho, Wo, g, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t sum_pool2d(const T* x, T* y, int64_t B, int64_t H, int64_t W, int64_t C, int f, float scale,
                       cudaStream_t s) {
  if (f < 1 || H % f != 0 || W % f != 0) return cudaErrorInvalidValue;
  const int64_t n = B * (H / f) * (W / f) * C;
  if (n <= 0) return cudaSuccess;
  sum_pool_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), H, W, C, f, scale, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t upsample_nearest(const T* x, T* y, int64_t B, int64_t h, int64_t w, int64_t C, int f, float scale,
                             cudaStream_t s) {
  if (f < 1) return cudaErrorInvalidValue;
  const int64_t n = B * h * f * w * f * C;
  if (n <= 0) return cudaSuccess;
  upsample_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), h, w, C, f, scale, n);
  return cudaGetLastError();
}

cudaError_t conv_transpose_weight_to_gemm(const float* w, float* wg, int64_t Ci, int64_t Co, int kh, int kw,
                                          cudaStream_t s) {
  const int64_t n = Ci * Co * kh * kw;
  if (n <= 0) return cudaSuccess;
  conv_transpose_weight_kernel<<<blocks_for(n), kThreads, 0, s>>>(w, wg, Ci, Co, kh, kw, n);
  return cudaGetLastError();
}
cudaError_t conv_transpose_weight_to_gemm(const float* w, bf16* wg, int64_t Ci, int64_t Co, int kh, int kw,
                                          cudaStream_t s) {
  const int64_t n = Ci * Co * kh * kw;
  if (n <= 0) return cudaSuccess;
  conv_transpose_weight_kernel<<<blocks_for(n), kThreads, 0, s>>>(w, dptr(wg), Ci, Co, kh, kw, n);
  return cudaGetLastError();
}

#define MF_POOL_INSTANTIATE(T)                                                                                    \
  template cudaError_t max_pool2d<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, Window,  \
                                     cudaStream_t);                                                               \
  template cudaError_t max_pool2d_backward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t,         \
                                              int64_t, int64_t, Window, cudaStream_t);                            \
  template cudaError_t sum_pool2d<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int, float, cudaStream_t); \
  template cudaError_t upsample_nearest<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int, float,          \
                                           cudaStream_t);
MF_POOL_INSTANTIATE(float)
MF_POOL_INSTANTIATE(bf16)
#undef MF_POOL_INSTANTIATE

}  // namespace mf::cuda::families
