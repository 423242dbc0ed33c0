// iFormer's and WaveMix's pooling ops: max pooling (and its backward), non-overlapping sum pooling,
// nearest upsampling, and the weight layout of the transposed convolution (whose products are
// cuBLASLt's and whose scatter is col2im, ../conv_backward.cu).
#include "ops/cuda/families/launch.cuh"

namespace mf::cuda::families {
namespace {

template <class T>
__global__ void max_pool_kernel(const T* x, T* y, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, Window g,
                                int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t at = math::max_pool_source(x, i, H, W, C, Ho, Wo, g);
    y[i] = at < 0 ? narrow<T>(-INFINITY) : x[at];
  }
}

template <class T>
__global__ void max_pool_backward_kernel(const T* x, const T* dy, T* dx, int64_t H, int64_t W, int64_t C, int64_t Ho,
                                         int64_t Wo, Window g, int64_t n) {
  MF_GRID_STRIDE(e, n) {
    dx[e] = narrow<T>(static_cast<float>(math::max_pool_backward_at(x, dy, e, H, W, C, Ho, Wo, g)));
  }
}

template <class T>
__global__ void sum_pool_kernel(const T* x, T* y, int64_t H, int64_t W, int64_t C, int f, float scale, int64_t n) {
  MF_GRID_STRIDE(e, n) { y[e] = narrow<T>(static_cast<float>(math::sum_pool_at(x, e, H, W, C, f, scale))); }
}

template <class T>
__global__ void upsample_kernel(const T* x, T* y, int64_t h, int64_t w, int64_t C, int f, float scale, int64_t n) {
  MF_GRID_STRIDE(e, n) { y[e] = narrow<T>(scale * math::ld(x[math::upsample_source(e, h, w, C, f)])); }
}

template <class O>
__global__ void conv_transpose_weight_kernel(const float* w, O* wg, int64_t Ci, int64_t Co, int kh, int kw, int64_t n) {
  MF_GRID_STRIDE(e, n) { wg[e] = narrow<O>(w[math::conv_transpose_weight_source(e, Ci, Co, kh, kw)]); }
}

}  // namespace

template <class T>
cudaError_t max_pool2d(const T* x, T* y, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, Window g,
                       cudaStream_t s) {
  if (g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1) return cudaErrorInvalidValue;
  const int64_t n = B * Ho * Wo * C;
  if (n <= 0) return cudaSuccess;
  max_pool_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), H, W, C, Ho, Wo, g, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t max_pool2d_backward(const T* x, const T* dy, T* dx, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho,
                                int64_t Wo, Window g, cudaStream_t s) {
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

#define MF_POOL_INSTANTIATE(T)                                                                                     \
  template cudaError_t max_pool2d<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, Window,   \
                                     cudaStream_t);                                                                \
  template cudaError_t max_pool2d_backward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                              int64_t, Window, cudaStream_t);                                      \
  template cudaError_t sum_pool2d<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int, float, cudaStream_t);  \
  template cudaError_t upsample_nearest<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int, float, cudaStream_t);
MF_POOL_INSTANTIATE(float)
MF_POOL_INSTANTIATE(bf16)
#undef MF_POOL_INSTANTIATE

}  // namespace mf::cuda::families
