// Grid-stride loops over the output, one element a thread: these run once or twice per spectral
// mixer or stem, never inside a block's hot path, so simplicity wins over tuning.
#include "ops/cuda/backend_kernels.h"

#include <cuda_bf16.h>

namespace mf::cuda {
namespace {

constexpr int kThreads = 256;
inline int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}
#define MF_GRID_LOOP(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

__global__ void fill_kernel(float* p, int64_t n, float v) {
  MF_GRID_LOOP(i, n) p[i] = v;
}

__global__ void nhwc_to_nchw_kernel(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, float scale) {
  const int64_t n = B * H * W * C;
  MF_GRID_LOOP(i, n) {  // i indexes y [B, C, H, W]
    int64_t w = i % W, t = i / W;
    int64_t h = t % H; t /= H;
    int64_t c = t % C, b = t / C;
    y[i] = x[((b * H + h) * W + w) * C + c] * scale;
  }
}

__global__ void nchw_to_nhwc_kernel(const float* x, float* y, int64_t B, int64_t C, int64_t H, int64_t W, float scale) {
  const int64_t n = B * H * W * C;
  MF_GRID_LOOP(i, n) {  // i indexes y [B, H, W, C]
    int64_t c = i % C, t = i / C;
    int64_t w = t % W; t /= W;
    int64_t h = t % H, b = t / H;
    y[i] = x[((b * C + c) * H + h) * W + w] * scale;
  }
}

__device__ inline float column_scale(int64_t f, int64_t W, float mid_scale) {
  return (f >= 1 && f <= (W + 1) / 2 - 1) ? mid_scale : 1.f;
}

__global__ void spectrum_split_kernel(const float* z, float* y, int64_t B, int64_t C, int64_t H, int64_t Wf, int64_t W,
                                      float scale, float mid_scale) {
  const int64_t n = B * H * Wf * C;
  MF_GRID_LOOP(i, n) {  // i indexes (b, h, f, c) of y [B, H, Wf, 2, C]
    int64_t c = i % C, t = i / C;
    int64_t f = t % Wf; t /= Wf;
    int64_t h = t % H, b = t / H;
    const float s = scale * column_scale(f, W, mid_scale);
    const float* zc = z + 2 * (((b * C + c) * H + h) * Wf + f);
    float* yb = y + ((b * H + h) * Wf + f) * 2 * C;
    yb[c] = zc[0] * s;
    yb[C + c] = zc[1] * s;
  }
}

__global__ void spectrum_join_kernel(const float* x, float* z, int64_t B, int64_t C, int64_t H, int64_t Wf, int64_t W,
                                     float scale, float mid_scale) {
  const int64_t n = B * H * Wf * C;
  MF_GRID_LOOP(i, n) {  // i indexes (b, c, f, h) of z [B, C, Wf, H]
    int64_t h = i % H, t = i / H;
    int64_t f = t % Wf; t /= Wf;
    int64_t c = t % C, b = t / C;
    const float s = scale * column_scale(f, W, mid_scale);
    const float* xb = x + ((b * H + h) * Wf + f) * 2 * C;
    z[2 * i] = xb[c] * s;
    z[2 * i + 1] = xb[C + c] * s;
  }
}

__global__ void transpose_complex_kernel(const float2* z, float2* y, int64_t N, int64_t R, int64_t S) {
  const int64_t n = N * R * S;
  MF_GRID_LOOP(i, n) {  // i indexes y [N, S, R]
    int64_t r = i % R, t = i / R;
    int64_t s = t % S, b = t / S;
    y[i] = z[(b * R + r) * S + s];
  }
}

__global__ void add_token_bias_kernel(float* y, const float* bias, int64_t B, int64_t M, int64_t C) {
  const int64_t n = B * M * C;
  MF_GRID_LOOP(i, n) y[i] += bias[(i / C) % M];
}
__global__ void add_token_bias_bf16_kernel(__nv_bfloat16* y, const float* bias, int64_t B, int64_t M, int64_t C) {
  const int64_t n = B * M * C;
  MF_GRID_LOOP(i, n) y[i] = __float2bfloat16(__bfloat162float(y[i]) + bias[(i / C) % M]);
}

}  // namespace

void fill(float* p, int64_t n, float value, cudaStream_t s) {
  if (n > 0) fill_kernel<<<blocks_for(n), kThreads, 0, s>>>(p, n, value);
}
void nhwc_to_nchw_scaled(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, float scale,
                         cudaStream_t s) {
  const int64_t n = B * H * W * C;
  if (n > 0) nhwc_to_nchw_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, y, B, H, W, C, scale);
}
void nchw_to_nhwc_scaled(const float* x, float* y, int64_t B, int64_t C, int64_t H, int64_t W, float scale,
                         cudaStream_t s) {
  const int64_t n = B * H * W * C;
  if (n > 0) nchw_to_nhwc_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, y, B, C, H, W, scale);
}
void spectrum_split(const float* z, float* y, int64_t B, int64_t C, int64_t H, int64_t Wf, int64_t W, float scale,
                    float mid_scale, cudaStream_t s) {
  const int64_t n = B * H * Wf * C;
  if (n > 0) spectrum_split_kernel<<<blocks_for(n), kThreads, 0, s>>>(z, y, B, C, H, Wf, W, scale, mid_scale);
}
void spectrum_join_transposed(const float* x, float* z, int64_t B, int64_t C, int64_t H, int64_t Wf, int64_t W,
                              float scale, float mid_scale, cudaStream_t s) {
  const int64_t n = B * H * Wf * C;
  if (n > 0) spectrum_join_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, z, B, C, H, Wf, W, scale, mid_scale);
}
void transpose_complex(const float* z, float* y, int64_t N, int64_t R, int64_t S, cudaStream_t s) {
  const int64_t n = N * R * S;
  if (n > 0)
    transpose_complex_kernel<<<blocks_for(n), kThreads, 0, s>>>(reinterpret_cast<const float2*>(z),
                                                                reinterpret_cast<float2*>(y), N, R, S);
}
void add_token_bias(float* y, const float* bias, int64_t B, int64_t M, int64_t C, cudaStream_t s) {
  const int64_t n = B * M * C;
  if (n > 0) add_token_bias_kernel<<<blocks_for(n), kThreads, 0, s>>>(y, bias, B, M, C);
}
void add_token_bias_bf16(void* y, const float* bias, int64_t B, int64_t M, int64_t C, cudaStream_t s) {
  const int64_t n = B * M * C;
  if (n > 0)
    add_token_bias_bf16_kernel<<<blocks_for(n), kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(y), bias, B, M, C);
}

}  // namespace mf::cuda
