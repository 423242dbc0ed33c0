// Memory-bound elementwise work: activations, scaled residual adds, global pooling, layout change.
#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/fast_math.h"

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
  }
}

void CpuBackend::scaled_residual(const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                                 const Tensor* layer_scale, Tensor& y) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  const float* X = x.data();
  const float* Br = branch.data();
  const float* rs = res_scale ? res_scale->data() : nullptr;
  const float* ls = layer_scale ? layer_scale->data() : nullptr;
  float* Y = y.data();
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

}  // namespace mf
