#include "ops/cuda/simple_kernels.h"

#include <math.h>

namespace mf::cuda::simple {
namespace {

constexpr int kThreads = 256;
inline int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < (1 << 20) ? (b > 0 ? b : 1) : (1 << 20));
}
#define MF_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

__device__ inline float act_fn(float x, int act, float scale, float bias, float thr) {
  switch (act) {
    case 1: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case 2: { const float r = x > 0.f ? x : 0.f; return scale * r * r + bias; }
    case 3: { const float r = x > 0.f ? x : 0.f; return r * r; }
    case 4: return x > 0.f ? x : 0.f;
    case 5: return x / (1.f + expf(-x));
    case 6: return x > thr ? x - thr : (x < -thr ? x + thr : 0.f);
    default: return x;
  }
}

__global__ void activation_k(const float* x, float* y, int64_t n, int act, float sc, float bi, float th) {
  MF_GRID_LOOP(i, n) y[i] = act_fn(x[i], act, sc, bi, th);
}

__global__ void scaled_residual_k(const float* x, const float* rs, const float* br, const float* ls, float* y,
                                  int64_t n, int64_t C) {
  MF_GRID_LOOP(i, n) {
    const int64_t c = i % C;
    y[i] = x[i] * (rs ? rs[c] : 1.f) + br[i] * (ls ? ls[c] : 1.f);
  }
}

// Block-wide sum of doubles (blockDim.x a multiple of 32, at most 1024).
__device__ double block_sum(double v) {
  __shared__ double part[32];
  __shared__ double total;
  for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // `part` and `total` may still be read from a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < (int)(blockDim.x / 32) ? part[lane] : 0.0;
    for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

// One block per row (LayerNorm) or per sample (GroupNorm): two passes, mean then centred variance.
__global__ void norm_k(const float* x, const float* w, const float* b, float eps, float* y, int64_t len, int64_t C) {
  const float* xr = x + blockIdx.x * len;
  float* yr = y + blockIdx.x * len;
  double s = 0;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) s += xr[i];
  const double mean = block_sum(s) / (double)len;
  double v = 0;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
    const double d = xr[i] - mean;
    v += d * d;
  }
  const double var = block_sum(v) / (double)len;
  const float rstd = (float)(1.0 / sqrt(var + (double)eps));
  const float m = (float)mean;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
    const int64_t c = i % C;
    yr[i] = (xr[i] - m) * rstd * w[c] + (b ? b[c] : 0.f);
  }
}

__global__ void depthwise_k(const float* x, const float* w, const float* b, float* y, int64_t B, int64_t H, int64_t W,
                            int64_t C, int kh, int kw, int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo) {
  const int64_t n = B * Ho * Wo * C;
  MF_GRID_LOOP(i, n) {
    int64_t c = i % C, t = i / C;
    int64_t ox = t % Wo; t /= Wo;
    int64_t oy = t % Ho, bb = t / Ho;
    float acc = b ? b[c] : 0.f;
    for (int ky = 0; ky < kh; ++ky) {
      const int64_t iy = oy * sh - ph + ky;
      if (iy < 0 || iy >= H) continue;
      for (int kx = 0; kx < kw; ++kx) {
        const int64_t ix = ox * sw - pw + kx;
        if (ix < 0 || ix >= W) continue;
        acc = fmaf(x[((bb * H + iy) * W + ix) * C + c], w[(c * kh + ky) * kw + kx], acc);
      }
    }
    y[i] = acc;
  }
}

__global__ void pool_k(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, int k) {
  const int64_t n = B * H * W * C, pad = k / 2;
  MF_GRID_LOOP(i, n) {
    int64_t c = i % C, t = i / C;
    int64_t w = t % W; t /= W;
    int64_t h = t % H, bb = t / H;
    const int64_t h0 = max((int64_t)0, h - pad), h1 = min(H, h - pad + k);
    const int64_t w0 = max((int64_t)0, w - pad), w1 = min(W, w - pad + k);
    float acc = 0.f;
    for (int64_t a = h0; a < h1; ++a)
      for (int64_t q = w0; q < w1; ++q) acc += x[((bb * H + a) * W + q) * C + c];
    y[i] = acc / (float)((h1 - h0) * (w1 - w0)) - x[i];
  }
}

__global__ void gap_k(const float* x, float* y, int64_t B, int64_t HW, int64_t C) {
  MF_GRID_LOOP(i, B * C) {
    const int64_t c = i % C, bb = i / C;
    double acc = 0;
    for (int64_t p = 0; p < HW; ++p) acc += x[(bb * HW + p) * C + c];
    y[i] = (float)(acc / (double)HW);
  }
}

// One thread per (sample, head, query): online softmax over the keys, the output row in registers.
constexpr int kMaxHeadDim = 128;
__global__ void attention_k(const float* qkv, float* y, int64_t B, int64_t N, int heads, int hd, float scale) {
  const int64_t A = (int64_t)heads * hd;
  MF_GRID_LOOP(t, B * heads * N) {
    const int64_t i = t % N, r = t / N;
    const int h = (int)(r % heads);
    const int64_t bb = r / heads;
    const float* q = qkv + (bb * N + i) * 3 * A + h * hd;
    float acc[kMaxHeadDim];
    for (int d = 0; d < hd; ++d) acc[d] = 0.f;
    float mx = -INFINITY, denom = 0.f;
    for (int64_t j = 0; j < N; ++j) {
      const float* k = qkv + (bb * N + j) * 3 * A + A + h * hd;
      const float* v = k + A;
      float sdot = 0.f;
      for (int d = 0; d < hd; ++d) sdot = fmaf(q[d], k[d], sdot);
      sdot *= scale;
      const float nm = fmaxf(mx, sdot);
      const float corr = expf(mx - nm), p = expf(sdot - nm);
      denom = denom * corr + p;
      for (int d = 0; d < hd; ++d) acc[d] = acc[d] * corr + p * v[d];
      mx = nm;
    }
    float* yo = y + (bb * N + i) * A + h * hd;
    for (int d = 0; d < hd; ++d) yo[d] = acc[d] / denom;
  }
}

__global__ void sample_scale_k(const float* x, const float* sc, float* y, int64_t B, int64_t inner) {
  MF_GRID_LOOP(i, B * inner) y[i] = x[i] * sc[i / inner];
}

__global__ void channel_slice_k(const float* x, float* y, int64_t rows, int64_t C, int64_t off, int64_t width) {
  MF_GRID_LOOP(i, rows * width) y[i] = x[(i / width) * C + off + i % width];
}

__global__ void glu_k(const float* t, const float* c, float* y, int64_t rows, int64_t Ct, int64_t cw, int64_t go,
                      int64_t vo, int64_t width, int act, float sc, float bi, float th) {
  MF_GRID_LOOP(i, rows * width) {
    const int64_t j = i % width, r = i / width;
    const float g = act_fn(t[r * Ct + go + j], act, sc, bi, th);
    const float v = j < width - cw ? t[r * Ct + vo + j] : c[r * cw + j - (width - cw)];
    y[i] = g * v;
  }
}

__global__ void channel_affine_k(const float* x, const float* al, const float* be, float* y, int64_t n, int64_t C) {
  MF_GRID_LOOP(i, n) y[i] = fmaf(x[i], al[i % C], be[i % C]);
}

__global__ void complex_mul_k(const float* a, const float* b, float* y, int64_t rows, int64_t brows, int64_t C,
                              float sign) {
  MF_GRID_LOOP(i, rows * C) {
    const int64_t c = i % C, r = i / C;
    const float* pa = a + r * 2 * C;
    const float* pb = b + (r % brows) * 2 * C;
    const float ar = pa[c], ai = pa[C + c], br = pb[c], bi = sign * pb[C + c];
    y[r * 2 * C + c] = ar * br - ai * bi;
    y[r * 2 * C + C + c] = ar * bi + ai * br;
  }
}

__constant__ float kHaarSign[4][4] = {{1, 1, 1, 1}, {1, 1, -1, -1}, {1, -1, 1, -1}, {1, -1, -1, 1}};

__global__ void haar_k(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, int64_t h2, int64_t w2,
                       bool inverse) {
  MF_GRID_LOOP(t, B * h2 * w2 * C) {
    const int64_t c = t % C, r = t / C;
    const int64_t j = r % w2, r2 = r / w2;
    const int64_t i = r2 % h2, bb = r2 / h2;
    const float* band_in = x + (((bb * h2 + i) * w2 + j) * 4) * C + c;
    float* band_out = y + (((bb * h2 + i) * w2 + j) * 4) * C + c;
    int64_t pix[4];
    bool inside[4];
    for (int q = 0; q < 4; ++q) {
      const int64_t rr = 2 * i + q / 2, ss = 2 * j + q % 2;
      inside[q] = rr < H && ss < W;
      pix[q] = ((bb * H + rr) * W + ss) * C + c;
    }
    if (!inverse) {
      for (int sb = 0; sb < 4; ++sb) {
        float acc = 0.f;
        for (int q = 0; q < 4; ++q)
          if (inside[q]) acc += kHaarSign[sb][q] * x[pix[q]];
        band_out[sb * C] = 0.5f * acc;
      }
    } else {
      for (int q = 0; q < 4; ++q) {
        if (!inside[q]) continue;
        float acc = 0.f;
        for (int sb = 0; sb < 4; ++sb) acc += kHaarSign[sb][q] * band_in[sb * C];
        y[pix[q]] = 0.5f * acc;
      }
    }
  }
}

}  // namespace

void activation(const float* x, float* y, int64_t n, int act, float scale, float bias, float threshold, cudaStream_t s) {
  if (n > 0) activation_k<<<blocks_for(n), kThreads, 0, s>>>(x, y, n, act, scale, bias, threshold);
}
void scaled_residual(const float* x, const float* rs, const float* br, const float* ls, float* y, int64_t n, int64_t C,
                     cudaStream_t s) {
  if (n > 0) scaled_residual_k<<<blocks_for(n), kThreads, 0, s>>>(x, rs, br, ls, y, n, C);
}
void layer_norm(const float* x, const float* w, const float* b, float eps, float* y, int64_t rows, int64_t C,
                cudaStream_t s) {
  if (rows > 0) norm_k<<<(unsigned)rows, C >= 256 ? 256 : 64, 0, s>>>(x, w, b, eps, y, C, C);
}
void group_norm1(const float* x, const float* w, const float* b, float eps, float* y, int64_t B, int64_t S, int64_t C,
                 cudaStream_t s) {
  if (B > 0) norm_k<<<(unsigned)B, 1024, 0, s>>>(x, w, b, eps, y, S, C);
}
void depthwise_conv2d(const float* x, const float* w, const float* b, float* y, int64_t B, int64_t H, int64_t W,
                      int64_t C, int kh, int kw, int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s) {
  const int64_t n = B * Ho * Wo * C;
  if (n > 0) depthwise_k<<<blocks_for(n), kThreads, 0, s>>>(x, w, b, y, B, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo);
}
void pool_minus_input(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, int kernel, cudaStream_t s) {
  const int64_t n = B * H * W * C;
  if (n > 0) pool_k<<<blocks_for(n), kThreads, 0, s>>>(x, y, B, H, W, C, kernel);
}
void global_avg_pool(const float* x, float* y, int64_t B, int64_t HW, int64_t C, cudaStream_t s) {
  if (B * C > 0) gap_k<<<blocks_for(B * C), kThreads, 0, s>>>(x, y, B, HW, C);
}
void attention(const float* qkv, float* y, int64_t B, int64_t N, int heads, int head_dim, float scale, cudaStream_t s) {
  if (head_dim > kMaxHeadDim) return;  // the backend checks this first
  const int64_t n = B * heads * N;
  if (n > 0) attention_k<<<blocks_for(n), 128, 0, s>>>(qkv, y, B, N, heads, head_dim, scale);
}
void sample_scale(const float* x, const float* sc, float* y, int64_t B, int64_t inner, cudaStream_t s) {
  if (B * inner > 0) sample_scale_k<<<blocks_for(B * inner), kThreads, 0, s>>>(x, sc, y, B, inner);
}
void channel_slice(const float* x, float* y, int64_t rows, int64_t C, int64_t offset, int64_t width, cudaStream_t s) {
  if (rows * width > 0) channel_slice_k<<<blocks_for(rows * width), kThreads, 0, s>>>(x, y, rows, C, offset, width);
}
void glu(const float* t, const float* c, float* y, int64_t rows, int64_t Ct, int64_t cw, int64_t gate_offset,
         int64_t value_offset, int64_t width, int act, float scale, float bias, float threshold, cudaStream_t s) {
  if (rows * width > 0)
    glu_k<<<blocks_for(rows * width), kThreads, 0, s>>>(t, c, y, rows, Ct, cw, gate_offset, value_offset, width, act,
                                                         scale, bias, threshold);
}
void channel_affine(const float* x, const float* alpha, const float* beta, float* y, int64_t n, int64_t C,
                    cudaStream_t s) {
  if (n > 0) channel_affine_k<<<blocks_for(n), kThreads, 0, s>>>(x, alpha, beta, y, n, C);
}
void complex_mul(const float* a, const float* b, float* y, int64_t rows, int64_t brows, int64_t C, bool conj_b,
                 cudaStream_t s) {
  if (rows * C > 0)
    complex_mul_k<<<blocks_for(rows * C), kThreads, 0, s>>>(a, b, y, rows, brows, C, conj_b ? -1.f : 1.f);
}
void haar2d(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, int64_t h2, int64_t w2, bool inverse,
            cudaStream_t s) {
  const int64_t n = B * h2 * w2 * C;
  if (n > 0) haar_k<<<blocks_for(n), kThreads, 0, s>>>(x, y, B, H, W, C, h2, w2, inverse);
}

}  // namespace mf::cuda::simple
