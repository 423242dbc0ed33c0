// Linear maps over tokens on oneDNN: y[b] = R · x[b] (+ bias over tokens), R [M, N], x[b] [N, C].
// RandFormer's frozen matrix, ResMLP's cross-patch layer, MLP-Mixer's token MLP and gMLP's spatial
// gating projection are all this product, one per sample.
#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/onednn.h"

#include <vector>

namespace mf {

namespace {
// Token maps this small (the wavelet mixer's 4 × 4 sub-band mixing) over many "samples" cost more in
// oneDNN call overhead than in arithmetic: plain loops, parallel over samples.
constexpr int64_t kSmallMap = 64;  // M · N

void small_token_mix(const float* R, const float* X, const float* bias, float* Y, int64_t B, int64_t M, int64_t N,
                     int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < M; ++m) {
      float* out = Y + (b * M + m) * C;
      const float b0 = bias ? bias[m] : 0.f;
      for (int64_t c = 0; c < C; ++c) out[c] = b0;
      for (int64_t n = 0; n < N; ++n) {
        const float w = R[m * N + n];
        const float* in = X + (b * N + n) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) out[c] += w * in[c];
      }
    }
}
}  // namespace

void CpuBackend::token_mix(const Tensor& r, const Tensor& x, const Tensor* bias, Tensor& y) {
  const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2), M = r.dim(0);
  if (M * N <= kSmallMap) {
    small_token_mix(r.data(), x.data(), bias ? bias->data() : nullptr, y.data(), B, M, N, C);
    return;
  }
  auto& mm = onednn::strided_matmul(M, N, C, {N, 1}, {C, 1}, false);
  for (int64_t b = 0; b < B; ++b)
    onednn::run_strided(mm, M, N, C, {N, 1}, {C, 1}, r.data(), x.data() + b * N * C, y.data() + b * M * C);
  if (bias) {
    float* out = y.data();
    const float* bv = bias->data();
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < B * M; ++row)
      for (int64_t c = 0; c < C; ++c) out[row * C + c] += bv[row % M];
  }
}

void CpuBackend::token_mix_backward(const Tensor& r, const Tensor& x, const Tensor& dy, Tensor* dx, Tensor* dr,
                                   Tensor* dbias) {
  const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2), M = r.dim(0);
  if (M * N <= kSmallMap) {
    // dx[b] = Rᵀ · dy[b] with the same loops (Rᵀ materialised: it is tiny); dR and dbias by the reference.
    if (dx) {
      std::vector<float> rt(static_cast<size_t>(M * N));
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) rt[static_cast<size_t>(n * M + m)] = r.data()[m * N + n];
      small_token_mix(rt.data(), dy.data(), nullptr, dx->data(), B, N, M, C);
    }
    if (dr) {
      // dR[m, n] = Σ_b Σ_c dy[b, m, c] · x[b, n, c]: one reduction per (tiny) matrix entry.
      const float *D = dy.data(), *X = x.data();
#pragma omp parallel for schedule(static)
      for (int64_t mn = 0; mn < M * N; ++mn) {
        const int64_t m = mn / N, n = mn % N;
        double acc = 0;
        for (int64_t b = 0; b < B; ++b) {
          const float* g = D + (b * M + m) * C;
          const float* in = X + (b * N + n) * C;
          float part = 0.f;
#pragma omp simd reduction(+ : part)
          for (int64_t c = 0; c < C; ++c) part += g[c] * in[c];
          acc += part;
        }
        dr->data()[mn] += static_cast<float>(acc);
      }
    }
    if (dbias) RefBackend::token_mix_backward(r, x, dy, nullptr, nullptr, dbias);
    return;
  }
  if (dx) {  // dx[b] = Rᵀ · dy[b]: R read through transposed strides
    auto& mm = onednn::strided_matmul(N, M, C, {1, N}, {C, 1}, false);
    for (int64_t b = 0; b < B; ++b)
      onednn::run_strided(mm, N, M, C, {1, N}, {C, 1}, r.data(), dy.data() + b * M * C, dx->data() + b * N * C);
  }
  if (dr) {  // dR += Σ_b dy[b] · x[b]ᵀ, accumulated in place by the sum post-op, sample after sample
    auto& mm = onednn::strided_matmul(M, C, N, {C, 1}, {1, C}, true);
    for (int64_t b = 0; b < B; ++b)
      onednn::run_strided(mm, M, C, N, {C, 1}, {1, C}, dy.data() + b * M * C, x.data() + b * N * C, dr->data());
  }
  if (dbias) RefBackend::token_mix_backward(r, x, dy, nullptr, nullptr, dbias);  // a [M] reduction
}

}  // namespace mf
