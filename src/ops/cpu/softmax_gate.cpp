// PatchTSMixer's gated attention on the CPU (Backend::softmax_gate): x, logits [A, N, I], softmax over
// N. Parallel over A; within a slab the I columns are contiguous, so each of the passes (max, exp
// and sum, scale) runs vectorised over I with the column statistics in small per-thread rows.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_backend.h"

namespace mf {

namespace {
// s[n, i] = softmax over n of slab L [N, I], written into s (N·I floats).
void slab_softmax(const float* L, int64_t N, int64_t I, float* s, std::vector<float>& mx, std::vector<float>& sum) {
  mx.assign(static_cast<size_t>(I), -INFINITY);
  sum.assign(static_cast<size_t>(I), 0.f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < I; ++i) mx[static_cast<size_t>(i)] = std::max(mx[static_cast<size_t>(i)], L[n * I + i]);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < I; ++i) {
      const float e = std::exp(L[n * I + i] - mx[static_cast<size_t>(i)]);
      s[n * I + i] = e;
      sum[static_cast<size_t>(i)] += e;
    }
  for (int64_t i = 0; i < I; ++i) sum[static_cast<size_t>(i)] = 1.f / sum[static_cast<size_t>(i)];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < I; ++i) s[n * I + i] *= sum[static_cast<size_t>(i)];
}
}  // namespace

void CpuBackend::softmax_gate(const Tensor& x, const Tensor& logits, Tensor& y) {
  const int64_t A = x.dim(0), N = x.dim(1), I = x.dim(2);
  const float *X = x.data(), *L = logits.data();
  float* Y = y.data();
#pragma omp parallel
  {
    std::vector<float> mx, sum;
#pragma omp for schedule(static)
    for (int64_t a = 0; a < A; ++a) {
      float* ya = Y + a * N * I;
      slab_softmax(L + a * N * I, N, I, ya, mx, sum);
      const float* xa = X + a * N * I;
#pragma omp simd
      for (int64_t k = 0; k < N * I; ++k) ya[k] *= xa[k];
    }
  }
}

void CpuBackend::softmax_gate_backward(const Tensor& x, const Tensor& logits, const Tensor& dy, Tensor& dx,
                                       Tensor& dlogits) {
  const int64_t A = x.dim(0), N = x.dim(1), I = x.dim(2);
  const float *X = x.data(), *L = logits.data(), *G = dy.data();
  float *DX = dx.data(), *DL = dlogits.data();
#pragma omp parallel
  {
    std::vector<float> mx, sum;
    std::vector<double> dot;
#pragma omp for schedule(static)
    for (int64_t a = 0; a < A; ++a) {
      const int64_t off = a * N * I;
      float* s = DX + off;  // the softmax first, then dx = dy ⊙ s in place
      slab_softmax(L + off, N, I, s, mx, sum);
      dot.assign(static_cast<size_t>(I), 0.0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < I; ++i) dot[static_cast<size_t>(i)] += static_cast<double>(s[n * I + i]) * G[off + n * I + i] * X[off + n * I + i];
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < I; ++i) {
          const int64_t k = off + n * I + i;
          const float sn = s[n * I + i];
          // In double: a float product is exact there, so a one-token softmax gives exactly 0.
          DL[k] = static_cast<float>(sn * (static_cast<double>(G[k]) * X[k] - dot[static_cast<size_t>(i)]));
          s[n * I + i] = G[k] * sn;
        }
    }
  }
}

}  // namespace mf
