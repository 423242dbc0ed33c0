// Sequence ops: the position table added to every sequence (also Strip-MLP's and iFormer's position
// embeddings), the token embedding, RMSNorm and PatchTSMixer's softmax gate, forward and backward;
// every sum in double and in a fixed order.
#include "ops/cuda/backward_kernels.h"
#include "ops/cuda/families/launch.cuh"

namespace mf::cuda::families {
namespace {

template <class T>
__global__ void add_positions_kernel(const T* x, const float* pos, T* y, int64_t ND, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(static_cast<float>(math::add_positions_at(x, pos, i, ND))); }
}

template <class T>
__global__ void embedding_kernel(const float* ids, const float* table, T* y, int64_t D, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(table[math::embedding_source(ids, i, D)]); }
}

template <class T>
__global__ void embedding_grad_kernel(const T* dy, const int* order, const int* begin, float* dtable, int64_t D,
                                      int64_t n) {
  MF_GRID_STRIDE(e, n) { dtable[e] += static_cast<float>(math::embedding_grad_at(dy, order, begin, e, D)); }
}

template <class T>
__global__ void rms_norm_kernel(const T* x, const float* w, const double* stats, T* y, int64_t C, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(static_cast<float>(math::rms_norm_at(x, w, stats, i, C))); }
}

template <class T>
__global__ void rms_norm_dx_kernel(const T* x, const float* w, const T* dy, const double* stats, T* dx, int64_t C,
                                   int64_t n) {
  MF_GRID_STRIDE(i, n) { dx[i] = narrow<T>(static_cast<float>(math::rms_norm_dx_at(x, w, dy, stats, i, C))); }
}

template <class T>
__global__ void softmax_gate_kernel(const T* x, const T* logits, T* y, int64_t N, int64_t I, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(static_cast<float>(math::softmax_gate_at(x, logits, i, N, I))); }
}

template <class T>
__global__ void softmax_gate_backward_kernel(const T* x, const T* logits, const T* dy, T* dx, T* dl, int64_t N,
                                             int64_t I, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    double gx, gl;
    math::softmax_gate_backward_at(x, logits, dy, i, N, I, gx, gl);
    dx[i] = narrow<T>(static_cast<float>(gx));
    dl[i] = narrow<T>(static_cast<float>(gl));
  }
}

template <class T>
__global__ void causal_conv1d_kernel(const T* x, const float* w, const float* b, T* y, int64_t L, int64_t C, int64_t K,
                                     int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(static_cast<float>(math::causal_conv1d_at(x, w, b, i, L, C, K))); }
}

template <class T>
__global__ void causal_conv1d_dx_kernel(const float* w, const T* dy, T* dx, int64_t L, int64_t C, int64_t K,
                                        int64_t n) {
  MF_GRID_STRIDE(i, n) { dx[i] = narrow<T>(static_cast<float>(math::causal_conv1d_dx_at(w, dy, i, L, C, K))); }
}

// Row r = (b·heads + h)·N + i.
template <class T>
__global__ void causal_attention_kernel(const T* qkv, T* y, math::CausalAttention a, int64_t rows) {
  MF_GRID_STRIDE(r, rows) { a.forward_row(qkv, y, r / (a.heads * a.N), (r / a.N) % a.heads, r % a.N); }
}

template <class T>
__global__ void causal_attention_stats_kernel(const T* qkv, const T* dy, double* stats, math::CausalAttention a,
                                              int64_t rows) {
  MF_GRID_STRIDE(r, rows) {
    a.backward_stats(qkv, dy, r / (a.heads * a.N), (r / a.N) % a.heads, r % a.N, stats + r * 3);
  }
}

template <class T>
__global__ void causal_attention_dq_kernel(const T* qkv, const T* dy, const double* stats, T* dqkv,
                                           math::CausalAttention a, int64_t rows) {
  MF_GRID_STRIDE(r, rows) { a.dq_row(qkv, dy, stats + r * 3, dqkv, r / (a.heads * a.N), (r / a.N) % a.heads, r % a.N); }
}

template <class T>
__global__ void causal_attention_dkv_kernel(const T* qkv, const T* dy, const double* stats, T* dqkv,
                                            math::CausalAttention a, int64_t rows) {
  MF_GRID_STRIDE(r, rows) { a.dkv_row(qkv, dy, stats, dqkv, r / (a.heads * a.N), (r / a.N) % a.heads, r % a.N); }
}

}  // namespace

template <class T>
cudaError_t add_positions(const T* x, const float* pos, T* y, int64_t B, int64_t N, int64_t D, cudaStream_t s) {
  const int64_t n = B * N * D;
  if (n <= 0) return cudaSuccess;
  add_positions_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), pos, dptr(y), N * D, n);
  return cudaGetLastError();
}

int64_t add_positions_backward_work(int64_t B, int64_t N, int64_t D) { return column_work(B, N * D, 1); }

template <class T>
cudaError_t add_positions_backward(const T* dy, float* dpos, int64_t B, int64_t N, int64_t D, double* work,
                                   cudaStream_t s) {
  using E = typename DevT<T>::type;
  column_sums<1>(math::PositionGrad<E>{dptr(dy), dpos, N * D}, B, N * D, work, s);
  return cudaGetLastError();
}

template <class T>
cudaError_t embedding(const float* ids, const float* table, T* y, int64_t n, int64_t D, cudaStream_t s) {
  const int64_t total = n * D;
  if (total <= 0) return cudaSuccess;
  embedding_kernel<<<blocks_for(total), kThreads, 0, s>>>(ids, table, dptr(y), D, total);
  return cudaGetLastError();
}

template <class T>
cudaError_t embedding_backward(const T* dy, const int* order, const int* begin, float* dtable, int64_t V, int64_t D,
                               cudaStream_t s) {
  const int64_t total = V * D;
  if (total <= 0) return cudaSuccess;
  embedding_grad_kernel<<<blocks_for(total), kThreads, 0, s>>>(dptr(dy), order, begin, dtable, D, total);
  return cudaGetLastError();
}

// [the rows' statistics: rows · 2 | the sums' partials]
int64_t rms_norm_work(int64_t rows, int64_t C) {
  const int64_t g = group_work(rows, C, 2), c = column_work(rows, C, 1);
  return rows * 2 + (g > c ? g : c);
}

template <class T>
cudaError_t rms_norm(const T* x, const float* w, float eps, T* y, int64_t rows, int64_t C, double* work,
                     cudaStream_t s) {
  const int64_t n = rows * C;
  if (n <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  double *stats = work, *partials = work + rows * 2;
  group_sums<1>(math::RmsRowSums<E, 1>{dptr(x), nullptr, w, stats, C, eps}, rows, C, partials, s);
  rms_norm_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), w, stats, dptr(y), C, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t rms_norm_backward(const T* x, const float* w, float eps, const T* dy, T* dx, float* dw, int64_t rows,
                              int64_t C, double* work, cudaStream_t s) {
  const int64_t n = rows * C;
  if (n <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  double *stats = work, *partials = work + rows * 2;
  group_sums<2>(math::RmsRowSums<E, 2>{dptr(x), dptr(dy), w, stats, C, eps}, rows, C, partials, s);
  rms_norm_dx_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), w, dptr(dy), stats, dptr(dx), C, n);
  if (dw) column_sums<1>(math::RmsWeightGrad<E>{dptr(x), dptr(dy), stats, dw, C}, rows, C, partials, s);
  return cudaGetLastError();
}

template <class T>
cudaError_t softmax_gate(const T* x, const T* logits, T* y, int64_t A, int64_t N, int64_t I, cudaStream_t s) {
  const int64_t n = A * N * I;
  if (n <= 0) return cudaSuccess;
  softmax_gate_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(logits), dptr(y), N, I, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t softmax_gate_backward(const T* x, const T* logits, const T* dy, T* dx, T* dlogits, int64_t A, int64_t N,
                                  int64_t I, cudaStream_t s) {
  const int64_t n = A * N * I;
  if (n <= 0) return cudaSuccess;
  softmax_gate_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(logits), dptr(dy), dptr(dx),
                                                                  dptr(dlogits), N, I, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t causal_conv1d(const T* x, const float* w, const float* b, T* y, int64_t B, int64_t L, int64_t C, int64_t K,
                          cudaStream_t s) {
  const int64_t n = B * L * C;
  if (n <= 0) return cudaSuccess;
  causal_conv1d_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), w, b, dptr(y), L, C, K, n);
  return cudaGetLastError();
}

int64_t causal_conv1d_backward_work(int64_t B, int64_t L, int64_t C, int64_t K) {
  const int64_t g = group_work(C * K, B * L, 1), c = column_work(B * L, C, 1);
  return g > c ? g : c;
}

template <class T>
cudaError_t causal_conv1d_backward(const T* x, const float* w, const T* dy, T* dx, float* dw, float* db, int64_t B,
                                   int64_t L, int64_t C, int64_t K, double* work, cudaStream_t s) {
  const int64_t n = B * L * C;
  if (n <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  if (dx) causal_conv1d_dx_kernel<<<blocks_for(n), kThreads, 0, s>>>(w, dptr(dy), dptr(dx), L, C, K, n);
  if (dw) group_sums<1>(math::CausalConvWeightGrad<E>{dptr(x), dptr(dy), dw, L, C, K}, C * K, B * L, work, s);
  if (db) return backward::column_sum_add(dy, db, B * L, C, work, s);
  return cudaGetLastError();
}

template <class T>
cudaError_t causal_attention(const T* qkv, T* y, int64_t B, int64_t N, int heads, int head_dim, float scale,
                             cudaStream_t s) {
  if (head_dim < 1 || head_dim > math::kMaxHeadDim) return cudaErrorInvalidValue;
  const int64_t rows = B * heads * N;
  if (rows <= 0) return cudaSuccess;
  const math::CausalAttention a{N, heads, head_dim, static_cast<double>(scale)};
  causal_attention_kernel<<<blocks_for(rows, 128), 128, 0, s>>>(dptr(qkv), dptr(y), a, rows);
  return cudaGetLastError();
}

int64_t causal_attention_backward_work(int64_t B, int64_t N, int heads) { return B * heads * N * 3; }

template <class T>
cudaError_t causal_attention_backward(const T* qkv, const T* dy, T* dqkv, int64_t B, int64_t N, int heads, int head_dim,
                                      float scale, double* work, cudaStream_t s) {
  if (head_dim < 1 || head_dim > math::kMaxHeadDim) return cudaErrorInvalidValue;
  const int64_t rows = B * heads * N;
  if (rows <= 0) return cudaSuccess;
  const math::CausalAttention a{N, heads, head_dim, static_cast<double>(scale)};
  causal_attention_stats_kernel<<<blocks_for(rows, 128), 128, 0, s>>>(dptr(qkv), dptr(dy), work, a, rows);
  causal_attention_dq_kernel<<<blocks_for(rows, 128), 128, 0, s>>>(dptr(qkv), dptr(dy), work, dptr(dqkv), a, rows);
  causal_attention_dkv_kernel<<<blocks_for(rows, 128), 128, 0, s>>>(dptr(qkv), dptr(dy), work, dptr(dqkv), a, rows);
  return cudaGetLastError();
}

#define MF_TOKENS_INSTANTIATE(T)                                                                                      \
  template cudaError_t add_positions<T>(const T*, const float*, T*, int64_t, int64_t, int64_t, cudaStream_t);         \
  template cudaError_t add_positions_backward<T>(const T*, float*, int64_t, int64_t, int64_t, double*, cudaStream_t); \
  template cudaError_t embedding<T>(const float*, const float*, T*, int64_t, int64_t, cudaStream_t);                  \
  template cudaError_t embedding_backward<T>(const T*, const int*, const int*, float*, int64_t, int64_t,              \
                                             cudaStream_t);                                                           \
  template cudaError_t rms_norm<T>(const T*, const float*, float, T*, int64_t, int64_t, double*, cudaStream_t);       \
  template cudaError_t rms_norm_backward<T>(const T*, const float*, float, const T*, T*, float*, int64_t, int64_t,    \
                                            double*, cudaStream_t);                                                   \
  template cudaError_t softmax_gate<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, cudaStream_t);              \
  template cudaError_t softmax_gate_backward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t,      \
                                                cudaStream_t);                                                        \
  template cudaError_t causal_conv1d<T>(const T*, const float*, const float*, T*, int64_t, int64_t, int64_t, int64_t, \
                                        cudaStream_t);                                                                \
  template cudaError_t causal_conv1d_backward<T>(const T*, const float*, const T*, T*, float*, float*, int64_t,       \
                                                 int64_t, int64_t, int64_t, double*, cudaStream_t);                   \
  template cudaError_t causal_attention<T>(const T*, T*, int64_t, int64_t, int, int, float, cudaStream_t);            \
  template cudaError_t causal_attention_backward<T>(const T*, const T*, T*, int64_t, int64_t, int, int, float,        \
                                                    double*, cudaStream_t);
MF_TOKENS_INSTANTIATE(float)
MF_TOKENS_INSTANTIATE(bf16)
#undef MF_TOKENS_INSTANTIATE

}  // namespace mf::cuda::families
