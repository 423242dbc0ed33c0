// Channel-window ops on the CPU: parallel over rows (positions), vectorised along the channels.
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/fast_math.h"

namespace mf {

namespace {
// out[j] = act(x[j]) for a contiguous run, with the same vectorised functions as the activation op.
void activate(const Activation& act, const float* x, float* out, int64_t n) {
  const float s = act.scale, b = act.bias;
  switch (act.kind) {
    case ActKind::Identity:
      std::memcpy(out, x, static_cast<size_t>(n) * sizeof(float));
      return;
    case ActKind::GELU:
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) out[j] = fastmath::gelu_fast(x[j]);
      return;
    case ActKind::SiLU:
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) out[j] = fastmath::silu_fast(x[j]);
      return;
    case ActKind::ReLU:
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) out[j] = x[j] > 0.f ? x[j] : 0.f;
      return;
    case ActKind::SoftShrink: {
      const float t = act.threshold;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) out[j] = x[j] > t ? x[j] - t : x[j] < -t ? x[j] + t : 0.f;
      return;
    }
    case ActKind::StarReLU:
    case ActKind::SquaredReLU: {
      const float scale = act.kind == ActKind::StarReLU ? s : 1.f, bias = act.kind == ActKind::StarReLU ? b : 0.f;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const float r = x[j] > 0.f ? x[j] : 0.f;
        out[j] = scale * r * r + bias;
      }
      return;
    }
  }
}
// out[j] = act'(x[j]) · g[j].
void activation_derivative_times(const Activation& act, const float* x, const float* g, float* out, int64_t n) {
  switch (act.kind) {
    case ActKind::Identity:
      std::memcpy(out, g, static_cast<size_t>(n) * sizeof(float));
      return;
    case ActKind::GELU:
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const float v = x[j];
        const float cdf = 0.5f * (1.f + fastmath::erf_fast(v * 0.70710678118654752f));
        const float pdf = 0.39894228040143268f * fastmath::exp_fast(-0.5f * v * v);
        out[j] = g[j] * (cdf + v * pdf);
      }
      return;
    case ActKind::SiLU:
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const float sg = 1.f / (1.f + fastmath::exp_fast(-x[j]));
        out[j] = g[j] * sg * (1.f + x[j] * (1.f - sg));
      }
      return;
    default:
      for (int64_t j = 0; j < n; ++j) out[j] = g[j] * static_cast<float>(activation_derivative(act, x[j]));
      return;
  }
}
}  // namespace

void CpuBackend::channel_slice(const Tensor& x, int64_t offset, Tensor& y) {
  const int64_t C = x.shape().last(), w = y.shape().last(), rows = y.shape().rows();
  const float* X = x.data();
  float* Y = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) std::memcpy(Y + r * w, X + r * C + offset, static_cast<size_t>(w) * sizeof(float));
}

void CpuBackend::channel_slice_backward(const Tensor& dy, int64_t offset, Tensor& dx) {
  const int64_t C = dx.shape().last(), w = dy.shape().last(), rows = dy.shape().rows();
  const float* D = dy.data();
  float* X = dx.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* out = X + r * C + offset;
    const float* in = D + r * w;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) out[j] += in[j];
  }
}

void CpuBackend::glu(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                     const Activation& act, Tensor& y) {
  const int64_t Ct = t.shape().last(), w = y.shape().last(), rows = y.shape().rows();
  const int64_t cw = c ? c->shape().last() : 0, from_t = w - cw;
  const float* T = t.data();
  const float* Cv = c ? c->data() : nullptr;
  float* Y = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* out = Y + r * w;
    const float* row = T + r * Ct;
    activate(act, row + gate_offset, out, w);
    const float* v = row + value_offset;
#pragma omp simd
    for (int64_t j = 0; j < from_t; ++j) out[j] *= v[j];
    if (cw) {
      const float* cv = Cv + r * cw;
      float* tail = out + from_t;
#pragma omp simd
      for (int64_t j = 0; j < cw; ++j) tail[j] *= cv[j];
    }
  }
}

void CpuBackend::glu_backward(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                              const Activation& act, const Tensor& dy, Tensor& dt, Tensor* dc) {
  const int64_t Ct = t.shape().last(), w = dy.shape().last(), rows = dy.shape().rows();
  const int64_t cw = c ? c->shape().last() : 0, from_t = w - cw;
  const float* T = t.data();
  const float* Cv = c ? c->data() : nullptr;
  const float* G = dy.data();
  float* DT = dt.data();
  float* DC = dc ? dc->data() : nullptr;
  // The gate and value windows never overlap in the callers (MambaOut, gMixer, gMLP); the dispatcher's
  // reference path accumulates, this one may write.
  MF_ASSERT(gate_offset + w <= value_offset || value_offset + from_t <= gate_offset || from_t == 0);
#pragma omp parallel
  {
    std::vector<float> g(static_cast<size_t>(w)), dg(static_cast<size_t>(w));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = T + r * Ct;
      const float* gate_in = row + gate_offset;
      const float* gy = G + r * w;
      float* drow = DT + r * Ct;
      std::fill(drow, drow + Ct, 0.f);
      activate(act, gate_in, g.data(), w);
      // d gate_in = dy · value · act'(gate_in), from the same vectorised derivative as the activation op.
      for (int64_t j = 0; j < w; ++j) {
        const float v = j < from_t ? row[value_offset + j] : Cv[r * cw + j - from_t];
        dg[static_cast<size_t>(j)] = gy[j] * v;
      }
      activation_derivative_times(act, gate_in, dg.data(), drow + gate_offset, w);
      for (int64_t j = 0; j < from_t; ++j) drow[value_offset + j] = gy[j] * g[static_cast<size_t>(j)];
      if (DC)
        for (int64_t j = from_t; j < w; ++j) DC[r * cw + j - from_t] = gy[j] * g[static_cast<size_t>(j)];
    }
  }
}

void CpuBackend::channel_affine(const Tensor& x, const Tensor& alpha, const Tensor& beta, Tensor& y) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  const float *X = x.data(), *A = alpha.data(), *B = beta.data();
  float* Y = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) Y[r * C + j] = X[r * C + j] * A[j] + B[j];
  }
}

}  // namespace mf
