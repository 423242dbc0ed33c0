// The layer scale's part of the folded MLP half's backward (CudaBackwardOps::linear_act_scaled_backward):
// y = skip + ls ⊙ (h · Wᵀ + b) runs as one GEMM with the folded weight ls ⊙ W, so the backward's GEMMs
// give G = dyᵀ · h and s = Σ_rows dy instead of the parameters' own gradients. From them, per output
// row n (the chain rule through the fold):
//   dW[n, :] += ls[n] · G[n, :]
//   db[n]    += ls[n] · s[n]
//   dls[n]   += Σ_k W[n, k] · G[n, k] + b[n] · s[n]     (= Σ_rows dy ⊙ (h · Wᵀ + b), the branch output)
// One block a row; the row's sum in double, reduced in a fixed order: deterministic, no atomics.
// PoolFormer's pooling half folds its layer scale into the GroupNorm's weight the same way, with
// K = 1: G and s are then the norm's own weight and bias sums (CudaBackwardOps::pool_branch_backward).
#include "ops/cuda/backward_kernels.h"

namespace mf::cuda::backward {

namespace {
constexpr int kFoldThreads = 256;

__global__ void layer_scale_fold_grads_kernel(const float* __restrict__ G, const float* __restrict__ s,
                                              const float* __restrict__ w, const float* __restrict__ b,
                                              const float* __restrict__ ls, float* __restrict__ dw,
                                              float* __restrict__ db, float* __restrict__ dls, int64_t K) {
  const int64_t n = blockIdx.x;
  const float scale = ls[n];
  const float* g = G ? G + n * K : nullptr;
  double acc = 0.0;
  if (dw || dls) {  // G is given exactly then
    for (int64_t k = threadIdx.x; k < K; k += kFoldThreads) {
      const float gk = g[k];
      if (dw) dw[n * K + k] += scale * gk;
      if (dls) acc += static_cast<double>(w[n * K + k]) * gk;
    }
  }
  if (!dls && !db) return;
  __shared__ double part[kFoldThreads];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kFoldThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  const double sn = s ? static_cast<double>(s[n]) : 0.0;
  if (dls) dls[n] += static_cast<float>(part[0] + (b ? static_cast<double>(b[n]) * sn : 0.0));
  if (db) db[n] += static_cast<float>(scale * sn);
}
}  // namespace

cudaError_t layer_scale_fold_grads(const float* G, const float* s, const float* w, const float* b, const float* ls,
                                   float* dw, float* db, float* dls, int64_t N, int64_t K, cudaStream_t st) {
  if (N > 0 && K > 0 && (dw || db || dls))
    layer_scale_fold_grads_kernel<<<static_cast<unsigned>(N), kFoldThreads, 0, st>>>(G, s, w, b, ls, dw, db, dls, K);
  return cudaGetLastError();
}

}  // namespace mf::cuda::backward
