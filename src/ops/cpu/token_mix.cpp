// Linear maps over tokens on oneDNN: y[b] = R · x[b] (+ bias over tokens), R [M, N], x[b] [N, C].
// RandFormer's frozen matrix, ResMLP's cross-patch layer, MLP-Mixer's token MLP and gMLP's spatial
// gating projection are all this product, one per sample.
#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/onednn.h"

namespace mf {

void CpuBackend::token_mix(const Tensor& r, const Tensor& x, const Tensor* bias, Tensor& y) {
  const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2), M = r.dim(0);
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
