// Memory-bound elementwise work: activations, scaled residual adds, global pooling, layout change.
#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/fast_math.h"
#include "ops/cpu/norm_affine.h"
#include "ops/cpu/reduce.h"

namespace mf {

void CpuBackend::activation(const Tensor& x, const Activation& act, Tensor& y) {
  const int64_t n = x.numel();
  const float* X = x.data();
  float* Y = y.data();
  const float s = act.scale, bias = act.bias;
  switch (act.kind) {
    case ActKind::Identity:
      if (!x.same_memory(y)) y.copy_from(x);
      return;
    case ActKind::GELU:
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) Y[i] = fastmath::gelu_fast(X[i]);
      return;
    case ActKind::StarReLU:
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const float r = X[i] > 0.f ? X[i] : 0.f;
        Y[i] = s * r * r + bias;
      }
      return;
    case ActKind::SquaredReLU:
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const float r = X[i] > 0.f ? X[i] : 0.f;
        Y[i] = r * r;
      }
      return;
    case ActKind::ReLU:
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) Y[i] = X[i] > 0.f ? X[i] : 0.f;
      return;
    case ActKind::SiLU:
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) Y[i] = fastmath::silu_fast(X[i]);
      return;
    case ActKind::SoftShrink: {
      const float t = act.threshold;
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) Y[i] = X[i] > t ? X[i] - t : X[i] < -t ? X[i] + t : 0.f;
      return;
    }
  }
}

void cpu::scaled_residual_rows(const float* X, const float* rs, const float* Br, const float* ls, int64_t rows,
                               int64_t C, float* Y) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = X + r * C;
    const float* br = Br + r * C;
    float* yr = Y + r * C;
    if (rs && ls) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * rs[c] + br[c] * ls[c];
    } else if (rs) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * rs[c] + br[c];
    } else if (ls) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] + br[c] * ls[c];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] + br[c];
    }
  }
}

void CpuBackend::scaled_residual(const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                                 const Tensor* layer_scale, Tensor& y) {
  cpu::scaled_residual_rows(x.data(), res_scale ? res_scale->data() : nullptr, branch.data(),
                            layer_scale ? layer_scale->data() : nullptr, x.shape().rows(), x.shape().last(), y.data());
}

void CpuBackend::global_avg_pool(const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), C = x.shape().last(), HW = x.numel() / (B * C);
  const float* X = x.data();
  float* Y = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < B; ++n) {
    float* out = Y + n * C;
    for (int64_t c = 0; c < C; ++c) out[c] = 0.f;
    for (int64_t p = 0; p < HW; ++p) {
      const float* xp = X + (n * HW + p) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) out[c] += xp[c];
    }
    const float inv = 1.f / static_cast<float>(HW);
    for (int64_t c = 0; c < C; ++c) out[c] *= inv;
  }
}

void CpuBackend::nchw_to_nhwc(const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3);
  const float* X = x.data();
  float* Y = y.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t p = 0; p < HW; ++p)
      for (int64_t c = 0; c < C; ++c) Y[(n * HW + p) * C + c] = X[(n * C + c) * HW + p];
}


void CpuBackend::activation_backward(const Tensor& x, const Activation& act, const Tensor& dy, Tensor& dx,
                                     Tensor* dscale, Tensor* dbias) {
  const int64_t n = x.numel();
  const float* X = x.data();
  const float* G = dy.data();
  float* D = dx.data();
  const float s = act.scale;
  switch (act.kind) {
    case ActKind::Identity:
      dx.copy_from(dy);
      return;
    case ActKind::GELU:
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        // GELU'(x) = Φ(x) + x φ(x)
        const float v = X[i];
        const float cdf = 0.5f * (1.f + fastmath::erf_fast(v * 0.70710678118654752f));
        const float pdf = 0.39894228040143268f * fastmath::exp_fast(-0.5f * v * v);
        D[i] = G[i] * (cdf + v * pdf);
      }
      return;
    case ActKind::StarReLU: {
      // One pass: dx, and the scalars' gradients d scale = Σ dy · relu(x)², d bias = Σ dy. These sums
      // over a whole activation cancel heavily, so they accumulate in double.
      double sums[2] = {0.0, 0.0};
      cpu::chunked_sum((n + 1023) / 1024, 2, sums, [&](double* acc, int64_t r0, int64_t r1) {
        // Local restrict copies: through the lambda's captures the compiler must assume that the
        // stores to dx may change them, and the loop then runs scalar (4x slower).
        const float* __restrict x = X;
        const float* __restrict g = G;
        float* __restrict d = D;
        const float scale = s;
        const int64_t begin = r0 * 1024, end = std::min(n, r1 * 1024);
        double a0 = 0.0, a1 = 0.0;
#pragma omp simd reduction(+ : a0, a1)
        for (int64_t i = begin; i < end; ++i) {
          const float r = x[i] > 0.f ? x[i] : 0.f;
          d[i] = g[i] * 2.f * scale * r;
          a0 += static_cast<double>(g[i] * r * r);
          a1 += static_cast<double>(g[i]);
        }
        acc[0] += a0;
        acc[1] += a1;
      });
      if (dscale) dscale->data()[0] += static_cast<float>(sums[0]);
      if (dbias) dbias->data()[0] += static_cast<float>(sums[1]);
      return;
    }
    case ActKind::SquaredReLU:
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) D[i] = X[i] > 0.f ? G[i] * 2.f * X[i] : 0.f;
      return;
    case ActKind::ReLU:
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) D[i] = X[i] > 0.f ? G[i] : 0.f;
      return;
    case ActKind::SiLU:
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const float sg = 1.f / (1.f + fastmath::exp_fast(-X[i]));
        D[i] = G[i] * sg * (1.f + X[i] * (1.f - sg));
      }
      return;
    case ActKind::SoftShrink: {
      const float t = act.threshold;
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) D[i] = X[i] > t || X[i] < -t ? G[i] : 0.f;
      return;
    }
  }
}

void CpuBackend::scaled_residual_backward(const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                                          const Tensor* layer_scale, const Tensor& dy, Tensor& dx, Tensor& dbranch,
                                          Tensor* d_res_scale, Tensor* d_layer_scale) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  const float* X = x.data();
  const float* Br = d_layer_scale ? branch.data() : nullptr;  // read only for the layer scale's gradient
  const float* G = dy.data();
  const float* rs = res_scale ? res_scale->data() : nullptr;
  const float* ls = layer_scale ? layer_scale->data() : nullptr;
  float* DX = dx.defined() ? dx.data() : nullptr;  // undefined: the skip gradient is not wanted
  float* DB = dbranch.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = G + r * C;
    if (DX) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) DX[r * C + c] = rs ? g[c] * rs[c] : g[c];
    }
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) DB[r * C + c] = ls ? g[c] * ls[c] : g[c];
  }
  if (!d_res_scale && !d_layer_scale) return;
  std::vector<float> sums(static_cast<size_t>(2 * C), 0.f);  // [Σ dy·x | Σ dy·branch]
  cpu::chunked_sum(rows, 2 * C, sums.data(), [&](float* acc, int64_t r0, int64_t r1) {
    const float* __restrict g = G;  // local copies: see activation_backward
    const float* __restrict x = X;
    const float* __restrict br = Br;
    float* __restrict a = acc;
    const int64_t width = C;
    for (int64_t r = r0; r < r1; ++r) {
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) a[c] += g[r * width + c] * x[r * width + c];
      if (br) {
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) a[width + c] += g[r * width + c] * br[r * width + c];
      }
    }
  });
  if (d_res_scale)
    for (int64_t c = 0; c < C; ++c) d_res_scale->data()[c] += sums[static_cast<size_t>(c)];
  if (d_layer_scale)
    for (int64_t c = 0; c < C; ++c) d_layer_scale->data()[c] += sums[static_cast<size_t>(C + c)];
}

void CpuBackend::global_avg_pool_backward(const Tensor& dy, Tensor& dx) {
  const int64_t B = dx.dim(0), C = dx.shape().last(), HW = dx.numel() / (B * C);
  const float inv = 1.f / static_cast<float>(HW);
  const float* G = dy.data();
  float* D = dx.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t p = 0; p < HW; ++p) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) D[(n * HW + p) * C + c] = G[n * C + c] * inv;
    }
}

void CpuBackend::sample_scale(const Tensor& x, const Tensor& s, Tensor& y) {
  const int64_t B = x.dim(0), per = x.numel() / B;
  const float* X = x.data();
  float* Y = y.data();
  const float* S = s.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t i = 0; i < per; ++i) Y[n * per + i] = X[n * per + i] * S[n];
}

}  // namespace mf
