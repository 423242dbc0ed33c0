// CAS-ViT's gate x ⊙ f(g) and BatchNorm (CAS-ViT, WaveMix, AFFNet), forward and backward. The sums
// (a broadcast gate's gradient, the batch statistics, the norm's parameter gradients) are in double,
// in a fixed order, without atomics.
#include "ops/cuda/families/launch.cuh"

namespace mf::cuda::families {
namespace {

template <class T>
__global__ void gate_kernel(const T* x, const T* g, T* y, int64_t per, int64_t C, GateKind kind, bool sig, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const double v = math::gate_value(math::ld(g[math::gate_index(i, per, C, kind)]), sig);
    y[i] = narrow<T>(static_cast<float>(static_cast<double>(math::ld(x[i])) * v));
  }
}

// dx = dy · f(g); with a full gate also dg = dy · x · f'(g) (nothing to sum).
template <class T>
__global__ void gate_dx_kernel(const T* x, const T* g, const T* dy, T* dx, T* dg_full, int64_t per, int64_t C,
                               GateKind kind, bool sig, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const double gv = math::ld(g[math::gate_index(i, per, C, kind)]), d = math::ld(dy[i]);
    dx[i] = narrow<T>(static_cast<float>(d * math::gate_value(gv, sig)));
    if (dg_full) dg_full[i] = narrow<T>(static_cast<float>(d * math::ld(x[i]) * math::gate_slope(gv, sig)));
  }
}

template <class T>
__global__ void batch_norm_kernel(const T* x, const float* w, const float* b, const float* mean, const float* var,
                                  float eps, T* y, int64_t C, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(static_cast<float>(math::batch_norm_at(x, w, b, mean, var, eps, i, C))); }
}

template <class T>
__global__ void batch_norm_dx_kernel(const T* x, const float* w, const float* mean, const float* var, float eps,
                                     bool batch_stats, const T* dy, const double* sums, T* dx, int64_t rows, int64_t C,
                                     int64_t n) {
  MF_GRID_STRIDE(i, n) {
    dx[i] =
        narrow<T>(static_cast<float>(math::batch_norm_dx_at(x, w, mean, var, eps, batch_stats, dy, sums, i, rows, C)));
  }
}

}  // namespace

template <class T>
cudaError_t gate(const T* x, const T* g, T* y, int64_t B, int64_t per, int64_t C, GateKind kind, bool sigmoid,
                 cudaStream_t s) {
  const int64_t n = B * per * C;
  if (n <= 0) return cudaSuccess;
  gate_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(g), dptr(y), per, C, kind, sigmoid, n);
  return cudaGetLastError();
}

int64_t gate_backward_work(int64_t B, int64_t per, int64_t C, GateKind kind) {
  switch (kind) {
    case GateKind::full:
      return 0;
    case GateKind::position:
      return group_work(B * per, C, 1);
    case GateKind::channel:
      return column_work(per, B * C, 1);
  }
  return 0;
}

template <class T>
cudaError_t gate_backward(const T* x, const T* g, const T* dy, T* dx, T* dg, int64_t B, int64_t per, int64_t C,
                          GateKind kind, bool sigmoid, double* work, cudaStream_t s) {
  const int64_t n = B * per * C;
  if (n <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  gate_dx_kernel<<<blocks_for(n), kThreads, 0, s>>>(
      dptr(x), dptr(g), dptr(dy), dptr(dx), kind == GateKind::full ? dptr(dg) : nullptr, per, C, kind, sigmoid, n);
  if (kind == GateKind::position)
    group_sums<1>(math::PositionGateGrad<E>{dptr(x), dptr(dy), dptr(g), dptr(dg), C, sigmoid}, B * per, C, work, s);
  else if (kind == GateKind::channel)
    column_sums<1>(math::ChannelGateGrad<E>{dptr(x), dptr(dy), dptr(g), dptr(dg), per, C, sigmoid}, per, B * C, work,
                   s);
  return cudaGetLastError();
}

int64_t batch_norm_stats_work(int64_t rows, int64_t C) { return column_work(rows, C, 1) + C; }

template <class T>
cudaError_t batch_norm_stats(const T* x, float* mean, float* var, int64_t rows, int64_t C, double* work,
                             cudaStream_t s) {
  if (C <= 0) return cudaSuccess;
  if (rows <= 0) return cudaErrorInvalidValue;  // no statistics of nothing
  using E = typename DevT<T>::type;
  double* mean_d = work + column_work(rows, C, 1);
  column_sums<1>(math::ChannelMean<E>{dptr(x), mean, mean_d, rows, C}, rows, C, work, s);
  column_sums<1>(math::ChannelVar<E>{dptr(x), mean_d, var, rows, C}, rows, C, work, s);
  return cudaGetLastError();
}

template <class T>
cudaError_t batch_norm(const T* x, const float* w, const float* b, const float* mean, const float* var, float eps, T* y,
                       int64_t rows, int64_t C, cudaStream_t s) {
  const int64_t n = rows * C;
  if (n <= 0) return cudaSuccess;
  batch_norm_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), w, b, mean, var, eps, dptr(y), C, n);
  return cudaGetLastError();
}

int64_t batch_norm_backward_work(int64_t rows, int64_t C) { return column_work(rows, C, 2) + 2 * C; }

template <class T>
cudaError_t batch_norm_backward(const T* x, const float* w, const float* mean, const float* var, float eps,
                                bool batch_stats, const T* dy, T* dx, float* dw, float* db, int64_t rows, int64_t C,
                                double* work, cudaStream_t s) {
  const int64_t n = rows * C;
  if (C <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  double* sums = work + column_work(rows, C, 2);
  column_sums<2>(math::BatchNormSums<E>{dptr(x), dptr(dy), mean, var, eps, sums, dw, db, C}, rows, C, work, s);
  if (n > 0)
    batch_norm_dx_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), w, mean, var, eps, batch_stats, dptr(dy), sums,
                                                            dptr(dx), rows, C, n);
  return cudaGetLastError();
}

#define MF_GATE_BN_INSTANTIATE(T)                                                                                  \
  template cudaError_t gate<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, GateKind, bool, cudaStream_t);   \
  template cudaError_t gate_backward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t, GateKind, \
                                        bool, double*, cudaStream_t);                                              \
  template cudaError_t batch_norm_stats<T>(const T*, float*, float*, int64_t, int64_t, double*, cudaStream_t);     \
  template cudaError_t batch_norm<T>(const T*, const float*, const float*, const float*, const float*, float, T*,  \
                                     int64_t, int64_t, cudaStream_t);                                              \
  template cudaError_t batch_norm_backward<T>(const T*, const float*, const float*, const float*, float, bool,     \
                                              const T*, T*, float*, float*, int64_t, int64_t, double*, cudaStream_t);
MF_GATE_BN_INSTANTIATE(float)
MF_GATE_BN_INSTANTIATE(bf16)
#undef MF_GATE_BN_INSTANTIATE

}  // namespace mf::cuda::families
