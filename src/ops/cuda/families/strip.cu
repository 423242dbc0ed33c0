// Strip-MLP's ops: the strip projection (a whole row or column mixed per channel group, three taps
// across), the softmax reweighting of its branches, and ConvNeXt-V2's GRN; forward and backward.
#include "ops/cuda/families/launch.cuh"

namespace mf::cuda::families {
namespace {

using math::Strip;

template <class T>
__global__ void strip_mix_kernel(const T* x, const float* w, const float* bias, T* y, Strip s, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(static_cast<float>(math::strip_mix_at(x, w, bias, i, s))); }
}

template <class T>
__global__ void strip_mix_dx_kernel(const float* w, const T* dy, T* dx, Strip s, int64_t n) {
  MF_GRID_STRIDE(i, n) { dx[i] = narrow<T>(static_cast<float>(math::strip_mix_dx_at(w, dy, i, s))); }
}

template <class T>
__global__ void split_attention_kernel(Branches<T> br, const float* logits, T* y, int64_t per, int64_t C, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(static_cast<float>(math::split_attention_at(br, logits, i, per, C))); }
}

template <class T>
__global__ void split_attention_dbranch_kernel(const float* logits, const T* dy, BranchGrads<T> d, int64_t per,
                                               int64_t C, int64_t n) {
  MF_GRID_STRIDE(i, n) { math::split_attention_dbranches_at(logits, dy, d, i, per, C); }
}

// GRN forward, per sample (one block): g_c = √Σx², n_c = g_c / (mean_c g + 1e-6), into sums[b·C + c].
__global__ void grn_norm_kernel(double* sums, int64_t C) {
  __shared__ double scratch[32];
  double* s = sums + blockIdx.x * C;
  double part = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) part += sqrt(s[c]);
  const double mean = block_sum(part, scratch) / static_cast<double>(C);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s[c] = sqrt(s[c]) / (mean + 1e-6);
}

template <class T>
__global__ void grn_apply_kernel(const T* x, const float* gamma, const float* beta, const double* nx, T* y, int64_t N,
                                 int64_t C, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(static_cast<float>(math::grn_at(x, gamma, beta, nx, i, N, C))); }
}

// GRN backward, per sample (one block): the mean of g and Σ_c γ_c (Σx·dy)_c g_c, then each channel's
// four coefficients (math::grn_coefficients) from S = [Σx², Σx·dy, Σdy] into E [B, C, 4].
__global__ void grn_backward_coef_kernel(const double* S, const float* gamma, double* E, int64_t C) {
  __shared__ double scratch[32];
  const double* s = S + blockIdx.x * C * 3;
  double* e = E + blockIdx.x * C * 4;
  double part = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) part += sqrt(s[c * 3]);
  const double mean = block_sum(part, scratch) / static_cast<double>(C), inv = 1.0 / (mean + 1e-6);
  part = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) part += gamma[c] * s[c * 3 + 1] * sqrt(s[c * 3]);
  const double sg = block_sum(part, scratch);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    math::grn_coefficients(s + c * 3, gamma[c], inv, sg, C, e + c * 4);
}

// dγ[c] += Σ_b E[b, c, 2], dβ[c] += Σ_b E[b, c, 3], the samples in order.
__global__ void grn_param_grad_kernel(const double* E, float* dgamma, float* dbeta, int64_t B, int64_t C) {
  MF_GRID_STRIDE(c, C) {
    double dg = 0, db = 0;
    for (int64_t b = 0; b < B; ++b) {
      dg += E[(b * C + c) * 4 + 2];
      db += E[(b * C + c) * 4 + 3];
    }
    if (dgamma) dgamma[c] += static_cast<float>(dg);
    if (dbeta) dbeta[c] += static_cast<float>(db);
  }
}

template <class T>
__global__ void grn_dx_kernel(const T* x, const T* dy, const double* E, T* dx, int64_t N, int64_t C, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % C, b = i / (N * C);
    const double* e = E + (b * C + c) * 4;
    dx[i] = narrow<T>(static_cast<float>(math::ld(dy[i]) * e[0] + e[1] * math::ld(x[i])));
  }
}

template <class T, int K>
void split_logit_grads(Branches<T> br, const T* dy, const float* logits, float* dlogits, int64_t B, int64_t per,
                       int64_t C, double* work, cudaStream_t s) {
  column_sums<K>(math::SplitLogitGrad<T, K>{br, dy, logits, dlogits, per, C}, per, B * C, work, s);
}

}  // namespace

template <class T>
cudaError_t strip_mix(const T* x, const float* w, const float* b, T* y, int64_t B, int64_t H, int64_t W, int64_t C,
                      int axis, int64_t G, cudaStream_t s) {
  if ((axis != 1 && axis != 2) || G < 1) return cudaErrorInvalidValue;
  const int64_t n = B * H * W * C;
  if (n <= 0) return cudaSuccess;
  strip_mix_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), w, b, dptr(y), Strip(B, H, W, C, axis, G), n);
  return cudaGetLastError();
}

int64_t strip_mix_backward_work(int64_t B, int64_t H, int64_t W, int64_t C, int axis, int64_t G) {
  const Strip s(B, H, W, C, axis, G);
  const int64_t terms = B * s.P * s.per_group();
  const int64_t dw = group_work(G * s.L * s.L * 3, terms, 1), db = group_work(G * s.L, terms, 1);
  return dw > db ? dw : db;
}

template <class T>
cudaError_t strip_mix_backward(const T* x, const float* w, const T* dy, T* dx, float* dw, float* db, int64_t B,
                               int64_t H, int64_t W, int64_t C, int axis, int64_t G, double* work, cudaStream_t s) {
  if ((axis != 1 && axis != 2) || G < 1) return cudaErrorInvalidValue;
  const Strip st(B, H, W, C, axis, G);
  const int64_t n = B * H * W * C;
  if (dx && n > 0) strip_mix_dx_kernel<<<blocks_for(n), kThreads, 0, s>>>(w, dptr(dy), dptr(dx), st, n);
  const int64_t terms = B * st.P * st.per_group();
  using E = typename DevT<T>::type;
  if (dw) group_sums<1>(math::StripWeightGrad<E>{dptr(x), dptr(dy), dw, st}, G * st.L * st.L * 3, terms, work, s);
  if (db) group_sums<1>(math::StripBiasGrad<E>{dptr(dy), db, st}, G * st.L, terms, work, s);
  return cudaGetLastError();
}

template <class T>
cudaError_t split_attention(Branches<T> branches, const float* logits, T* y, int64_t B, int64_t per, int64_t C,
                            cudaStream_t s) {
  if (branches.K < 1 || branches.K > kMaxBranches) return cudaErrorInvalidValue;
  const int64_t n = B * per * C;
  if (n <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  Branches<E> br{};
  br.K = branches.K;
  for (int k = 0; k < br.K; ++k) br.p[k] = dptr(branches.p[k]);
  split_attention_kernel<<<blocks_for(n), kThreads, 0, s>>>(br, logits, dptr(y), per, C, n);
  return cudaGetLastError();
}

int64_t split_attention_backward_work(int64_t B, int64_t per, int64_t C, int K) { return column_work(per, B * C, K); }

template <class T>
cudaError_t split_attention_backward(Branches<T> branches, const float* logits, const T* dy, BranchGrads<T> dbranches,
                                     float* dlogits, int64_t B, int64_t per, int64_t C, double* work, cudaStream_t s) {
  const int K = branches.K;
  if (K < 1 || K > kMaxBranches || dbranches.K != K) return cudaErrorInvalidValue;
  const int64_t n = B * per * C;
  using E = typename DevT<T>::type;
  Branches<E> br{};
  BranchGrads<E> d{};
  br.K = d.K = K;
  for (int k = 0; k < K; ++k) br.p[k] = dptr(branches.p[k]), d.p[k] = dptr(dbranches.p[k]);
  if (n > 0) split_attention_dbranch_kernel<<<blocks_for(n), kThreads, 0, s>>>(logits, dptr(dy), d, per, C, n);
  switch (K) {
    case 1:
      split_logit_grads<E, 1>(br, dptr(dy), logits, dlogits, B, per, C, work, s);
      break;
    case 2:
      split_logit_grads<E, 2>(br, dptr(dy), logits, dlogits, B, per, C, work, s);
      break;
    case 3:
      split_logit_grads<E, 3>(br, dptr(dy), logits, dlogits, B, per, C, work, s);
      break;
    default:
      split_logit_grads<E, 4>(br, dptr(dy), logits, dlogits, B, per, C, work, s);
      break;
  }
  return cudaGetLastError();
}

int64_t grn_work(int64_t B, int64_t N, int64_t C) { return column_work(N, B * C, 1) + B * C; }

template <class T>
cudaError_t grn(const T* x, const float* gamma, const float* beta, T* y, int64_t B, int64_t N, int64_t C, double* work,
                cudaStream_t s) {
  const int64_t n = B * N * C;
  if (n <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  double* nx = work + column_work(N, B * C, 1);  // [B, C]
  column_sums<1>(math::GrnSums<E, 1>{dptr(x), nullptr, nx, N, C}, N, B * C, work, s);
  grn_norm_kernel<<<static_cast<unsigned>(B), kThreads, 0, s>>>(nx, C);
  grn_apply_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), gamma, beta, nx, dptr(y), N, C, n);
  return cudaGetLastError();
}

int64_t grn_backward_work(int64_t B, int64_t N, int64_t C) { return column_work(N, B * C, 3) + B * C * 7; }

template <class T>
cudaError_t grn_backward(const T* x, const float* gamma, const T* dy, T* dx, float* dgamma, float* dbeta, int64_t B,
                         int64_t N, int64_t C, double* work, cudaStream_t s) {
  const int64_t n = B * N * C;
  if (n <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  double* S = work + column_work(N, B * C, 3);  // [B, C, 3]
  double* coef = S + B * C * 3;                 // [B, C, 4]
  column_sums<3>(math::GrnSums<E, 3>{dptr(x), dptr(dy), S, N, C}, N, B * C, work, s);
  grn_backward_coef_kernel<<<static_cast<unsigned>(B), kThreads, 0, s>>>(S, gamma, coef, C);
  if (dgamma || dbeta) grn_param_grad_kernel<<<blocks_for(C), kThreads, 0, s>>>(coef, dgamma, dbeta, B, C);
  grn_dx_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(dy), coef, dptr(dx), N, C, n);
  return cudaGetLastError();
}

#define MF_STRIP_INSTANTIATE(T)                                                                                        \
  template cudaError_t strip_mix<T>(const T*, const float*, const float*, T*, int64_t, int64_t, int64_t, int64_t, int, \
                                    int64_t, cudaStream_t);                                                            \
  template cudaError_t strip_mix_backward<T>(const T*, const float*, const T*, T*, float*, float*, int64_t, int64_t,   \
                                             int64_t, int64_t, int, int64_t, double*, cudaStream_t);                   \
  template cudaError_t split_attention<T>(Branches<T>, const float*, T*, int64_t, int64_t, int64_t, cudaStream_t);     \
  template cudaError_t split_attention_backward<T>(Branches<T>, const float*, const T*, BranchGrads<T>, float*,        \
                                                   int64_t, int64_t, int64_t, double*, cudaStream_t);                  \
  template cudaError_t grn<T>(const T*, const float*, const float*, T*, int64_t, int64_t, int64_t, double*,            \
                              cudaStream_t);                                                                           \
  template cudaError_t grn_backward<T>(const T*, const float*, const T*, T*, float*, float*, int64_t, int64_t,         \
                                       int64_t, double*, cudaStream_t);
MF_STRIP_INSTANTIATE(float)
MF_STRIP_INSTANTIATE(bf16)
#undef MF_STRIP_INSTANTIATE

}  // namespace mf::cuda::families
