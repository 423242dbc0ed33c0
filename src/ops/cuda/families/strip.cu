// Strip-MLP's ops: the strip projection (a whole row or column mixed per channel group, three taps
// across), the softmax reweighting of its branches, and ConvNeXt-V2's GRN; forward and backward.
#include "ops/cuda/backward_common.cuh"
#include "ops/cuda/families/family_kernels.h"

namespace mf::cuda::families {
namespace {

using namespace backward::detail;

// strip_mix's geometry: the mixed axis (length L, index m or o) and the tap axis (length P, index p).
struct Strip {
  int64_t B, H, W, C, L, P, G;
  int axis;
  __host__ __device__ Strip(int64_t b, int64_t h, int64_t w, int64_t c, int a, int64_t g)
      : B(b), H(h), W(w), C(c), L(a == 2 ? w : h), P(a == 2 ? h : w), G(g), axis(a) {}
  // Offset of position (p, m) of sample b, channel 0.
  __device__ int64_t at(int64_t b, int64_t p, int64_t m) const {
    return (axis == 2 ? (b * H + p) * W + m : (b * H + m) * W + p) * C;
  }
  // The (p, m) of pixel r = (b·H + h)·W + w.
  __device__ void split(int64_t r, int64_t& b, int64_t& p, int64_t& m) const {
    const int64_t w = r % W, h = (r / W) % H;
    b = r / (W * H);
    p = axis == 2 ? h : w;
    m = axis == 2 ? w : h;
  }
  __device__ int64_t weight(int64_t g, int64_t o, int64_t m, int t) const { return ((g * L + o) * L + m) * 3 + t; }
  // Channels per group, counting a partial last one (the reference walks c = g, g + G, … < C).
  __host__ __device__ int64_t per_group() const { return (C + G - 1) / G; }
};

template <class T>
__global__ void strip_mix_kernel(const T* x, const float* w, const float* bias, T* y, Strip s, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % s.C;
    int64_t b, p, o;
    s.split(i / s.C, b, p, o);
    const int64_t g = c % s.G;
    double acc = bias ? bias[g * s.L + o] : 0.0;
    for (int t = 0; t < 3; ++t) {
      const int64_t q = p + t - 1;
      if (q < 0 || q >= s.P) continue;
      for (int64_t m = 0; m < s.L; ++m)
        acc += static_cast<double>(w[s.weight(g, o, m, t)]) * ld(x[s.at(b, q, m) + c]);
    }
    y[i] = narrow<T>(static_cast<float>(acc));
  }
}

// dx[q, m] = Σ_{o, t} w[g, o, m, t] · dy[q − t + 1, o]
template <class T>
__global__ void strip_mix_dx_kernel(const float* w, const T* dy, T* dx, Strip s, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % s.C;
    int64_t b, q, m;
    s.split(i / s.C, b, q, m);
    const int64_t g = c % s.G;
    double acc = 0;
    for (int t = 0; t < 3; ++t) {
      const int64_t p = q - t + 1;
      if (p < 0 || p >= s.P) continue;
      for (int64_t o = 0; o < s.L; ++o) acc += static_cast<double>(w[s.weight(g, o, m, t)]) * ld(dy[s.at(b, p, o) + c]);
    }
    dx[i] = narrow<T>(static_cast<float>(acc));
  }
}

// dw[g, o, m, t] += Σ_{b, p, channels c of g} dy[b, p, o, c] · x[b, p + t − 1, m, c]: one group sum
// per weight, its terms ordered (b, p, c).
template <class T>
struct StripWeightGrad {
  const T* x;
  const T* dy;
  float* dw;
  Strip s;
  __device__ void operator()(int64_t group, int64_t i, double* v) const {
    const int t = static_cast<int>(group % 3);
    const int64_t m = (group / 3) % s.L, o = (group / (3 * s.L)) % s.L, g = group / (3 * s.L * s.L);
    const int64_t k = i % s.per_group(), p = (i / s.per_group()) % s.P, b = i / (s.per_group() * s.P);
    const int64_t c = g + k * s.G, q = p + t - 1;
    v[0] = c < s.C && q >= 0 && q < s.P ? static_cast<double>(ld(dy[s.at(b, p, o) + c])) * ld(x[s.at(b, q, m) + c]) : 0.0;
  }
  __device__ void finish(int64_t group, const double* sums) const { dw[group] += static_cast<float>(sums[0]); }
};

template <class T>
struct StripBiasGrad {
  const T* dy;
  float* db;
  Strip s;
  __device__ void operator()(int64_t group, int64_t i, double* v) const {
    const int64_t o = group % s.L, g = group / s.L;
    const int64_t k = i % s.per_group(), p = (i / s.per_group()) % s.P, b = i / (s.per_group() * s.P);
    const int64_t c = g + k * s.G;
    v[0] = c < s.C ? static_cast<double>(ld(dy[s.at(b, p, o) + c])) : 0.0;
  }
  __device__ void finish(int64_t group, const double* sums) const { db[group] += static_cast<float>(sums[0]); }
};

// softmax over the K logits of (sample b, channel c), in double.
__device__ void branch_weights(const float* logits, int64_t b, int64_t c, int64_t C, int K, double* a) {
  const float* l = logits + (b * C + c) * K;
  double mx = l[0], sum = 0;
  for (int k = 1; k < K; ++k) mx = fmax(mx, static_cast<double>(l[k]));
  for (int k = 0; k < K; ++k) sum += a[k] = exp(static_cast<double>(l[k]) - mx);
  for (int k = 0; k < K; ++k) a[k] /= sum;
}

template <class T>
__global__ void split_attention_kernel(Branches<T> br, const float* logits, T* y, int64_t per, int64_t C, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % C, b = i / (per * C);
    double a[kMaxBranches];
    branch_weights(logits, b, c, C, br.K, a);
    double acc = 0;
    for (int k = 0; k < br.K; ++k) acc += a[k] * ld(br.p[k][i]);
    y[i] = narrow<T>(static_cast<float>(acc));
  }
}

template <class T>
__global__ void split_attention_dbranch_kernel(const float* logits, const T* dy, BranchGrads<T> d, int64_t per,
                                               int64_t C, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % C, b = i / (per * C);
    double a[kMaxBranches];
    branch_weights(logits, b, c, C, d.K, a);
    const double g = ld(dy[i]);
    for (int k = 0; k < d.K; ++k) d.p[k][i] = narrow<T>(static_cast<float>(a[k] * g));
  }
}

// da_k = Σ over the positions of dy · branch_k for each (sample, channel) = one column of a [per,
// B·C] view; then softmax's Jacobian, dl_k = a_k (da_k − Σ_j a_j da_j).
template <class T, int K>
struct SplitLogitGrad {
  Branches<T> br;
  const T* dy;
  const float* logits;
  float* dlogits;
  int64_t per, C;
  __device__ int64_t index(int64_t r, int64_t col) const { return ((col / C) * per + r) * C + col % C; }
  __device__ void operator()(int64_t r, int64_t col, double* v) const {
    const int64_t i = index(r, col);
    const double g = ld(dy[i]);
    for (int k = 0; k < K; ++k) v[k] = g * ld(br.p[k][i]);
  }
  __device__ void store(int64_t col, const double* da) const {
    double a[kMaxBranches];
    branch_weights(logits, col / C, col % C, C, K, a);
    double dot = 0;
    for (int k = 0; k < K; ++k) dot += a[k] * da[k];
    for (int k = 0; k < K; ++k) dlogits[col * K + k] = static_cast<float>(a[k] * (da[k] - dot));
  }
};

// GRN. Column sums over the positions of each (sample, channel): [N, B·C] views.
template <class T, int K>
struct GrnSums {
  const T* x;
  const T* dy;  // null in the forward pass
  double* out;  // [B·C, K]
  int64_t N, C;
  __device__ void operator()(int64_t r, int64_t col, double* v) const {
    const int64_t i = ((col / C) * N + r) * C + col % C;
    const double xv = ld(x[i]);
    v[0] = xv * xv;
    if constexpr (K == 3) {
      const double g = ld(dy[i]);
      v[1] = xv * g;
      v[2] = g;
    }
  }
  __device__ void store(int64_t col, const double* s) const {
    for (int k = 0; k < K; ++k) out[col * K + k] = s[k];
  }
};

// Forward, per sample (one block): g_c = √Σx², n_c = g_c / (mean_c g + 1e-6), into sums[b·C + c].
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
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % C, b = i / (N * C);
    const double v = ld(x[i]);
    y[i] = narrow<T>(static_cast<float>(gamma[c] * v * nx[b * C + c] + beta[c] + v));
  }
}

// Backward, per sample (one block), from S = [Σx², Σx·dy, Σdy] per channel: with g_c = √S0, m the
// mean of g, s_c = γ_c S1: dL/dg_j = s_j / (m + ε) − Σ_c s_c g_c / (C (m + ε)²). Writes per channel
// E = [1 + γ g / (m + ε) (dy's factor), dL/dg / g (x's factor; 0 where g = 0), S1 · g / (m + ε)
// (dγ's term), S2 (dβ's term)].
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
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const double g = sqrt(s[c * 3]), sc = gamma[c] * s[c * 3 + 1];
    const double dg = sc * inv - sg * inv * inv / static_cast<double>(C);
    e[c * 4 + 0] = 1.0 + gamma[c] * g * inv;
    e[c * 4 + 1] = g > 0 ? dg / g : 0.0;
    e[c * 4 + 2] = s[c * 3 + 1] * g * inv;
    e[c * 4 + 3] = s[c * 3 + 2];
  }
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
    dx[i] = narrow<T>(static_cast<float>(ld(dy[i]) * e[0] + e[1] * ld(x[i])));
  }
}

template <class T, int K>
void split_logit_grads(Branches<T> br, const T* dy, const float* logits, float* dlogits, int64_t B, int64_t per,
                       int64_t C, double* work, cudaStream_t s) {
  column_sums<K>(SplitLogitGrad<T, K>{br, dy, logits, dlogits, per, C}, per, B * C, work, s);
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
  if (dw) group_sums<1>(StripWeightGrad<E>{dptr(x), dptr(dy), dw, st}, G * st.L * st.L * 3, terms, work, s);
  if (db) group_sums<1>(StripBiasGrad<E>{dptr(dy), db, st}, G * st.L, terms, work, s);
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
    case 1: split_logit_grads<E, 1>(br, dptr(dy), logits, dlogits, B, per, C, work, s); break;
    case 2: split_logit_grads<E, 2>(br, dptr(dy), logits, dlogits, B, per, C, work, s); break;
    case 3: split_logit_grads<E, 3>(br, dptr(dy), logits, dlogits, B, per, C, work, s); break;
    default: split_logit_grads<E, 4>(br, dptr(dy), logits, dlogits, B, per, C, work, s); break;
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
  column_sums<1>(GrnSums<E, 1>{dptr(x), nullptr, nx, N, C}, N, B * C, work, s);
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
  double* coef = S + B * C * 3;                  // [B, C, 4]
  column_sums<3>(GrnSums<E, 3>{dptr(x), dptr(dy), S, N, C}, N, B * C, work, s);
  grn_backward_coef_kernel<<<static_cast<unsigned>(B), kThreads, 0, s>>>(S, gamma, coef, C);
  if (dgamma || dbeta) grn_param_grad_kernel<<<blocks_for(C), kThreads, 0, s>>>(coef, dgamma, dbeta, B, C);
  grn_dx_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(dy), coef, dptr(dx), N, C, n);
  return cudaGetLastError();
}

#define MF_STRIP_INSTANTIATE(T)                                                                                      \
  template cudaError_t strip_mix<T>(const T*, const float*, const float*, T*, int64_t, int64_t, int64_t, int64_t,    \
                                    int, int64_t, cudaStream_t);                                                     \
  template cudaError_t strip_mix_backward<T>(const T*, const float*, const T*, T*, float*, float*, int64_t, int64_t, \
                                             int64_t, int64_t, int, int64_t, double*, cudaStream_t);                 \
  template cudaError_t split_attention<T>(Branches<T>, const float*, T*, int64_t, int64_t, int64_t, cudaStream_t);   \
  template cudaError_t split_attention_backward<T>(Branches<T>, const float*, const T*, BranchGrads<T>, float*,      \
                                                   int64_t, int64_t, int64_t, double*, cudaStream_t);                \
  template cudaError_t grn<T>(const T*, const float*, const float*, T*, int64_t, int64_t, int64_t, double*,          \
                              cudaStream_t);                                                                         \
  template cudaError_t grn_backward<T>(const T*, const float*, const T*, T*, float*, float*, int64_t, int64_t,       \
                                       int64_t, double*, cudaStream_t);
MF_STRIP_INSTANTIATE(float)
MF_STRIP_INSTANTIATE(bf16)
#undef MF_STRIP_INSTANTIATE

}  // namespace mf::cuda::families
