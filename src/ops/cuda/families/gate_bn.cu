// CAS-ViT's gate x ⊙ f(g) and BatchNorm (CAS-ViT, WaveMix, AFFNet), forward and backward. The sums
// (a broadcast gate's gradient, the batch statistics, the norm's parameter gradients) are in double,
// in a fixed order, without atomics.
#include "ops/cuda/backward_common.cuh"
#include "ops/cuda/families/family_kernels.h"

namespace mf::cuda::families {
namespace {

using namespace backward::detail;

__device__ __forceinline__ int64_t gate_index(int64_t i, int64_t per, int64_t C, GateKind kind) {
  switch (kind) {
    case GateKind::full: return i;
    case GateKind::position: return i / C;
    case GateKind::channel: return i / (per * C) * C + i % C;
  }
  return i;
}
__device__ __forceinline__ double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }
// f(g) and f'(g).
__device__ __forceinline__ double gate_value(double g, bool sig) { return sig ? sigmoid(g) : g; }
__device__ __forceinline__ double gate_slope(double g, bool sig) {
  if (!sig) return 1.0;
  const double s = sigmoid(g);
  return s * (1.0 - s);
}

template <class T>
__global__ void gate_kernel(const T* x, const T* g, T* y, int64_t per, int64_t C, GateKind kind, bool sig, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const double v = gate_value(ld(g[gate_index(i, per, C, kind)]), sig);
    y[i] = narrow<T>(static_cast<float>(static_cast<double>(ld(x[i])) * v));
  }
}

// dx = dy · f(g); with a full gate also dg = dy · x · f'(g) (nothing to sum).
template <class T>
__global__ void gate_dx_kernel(const T* x, const T* g, const T* dy, T* dx, T* dg_full, int64_t per, int64_t C,
                               GateKind kind, bool sig, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const double gv = ld(g[gate_index(i, per, C, kind)]), d = ld(dy[i]);
    dx[i] = narrow<T>(static_cast<float>(d * gate_value(gv, sig)));
    if (dg_full) dg_full[i] = narrow<T>(static_cast<float>(d * ld(x[i]) * gate_slope(gv, sig)));
  }
}

// A gate per position: dg[p] = f'(g[p]) · Σ_c dy · x over the position's C contiguous channels.
template <class T>
struct PositionGateGrad {
  const T *x, *dy, *g;
  T* dg;
  int64_t C;
  bool sig;
  __device__ void operator()(int64_t p, int64_t c, double* v) const {
    const int64_t i = p * C + c;
    v[0] = static_cast<double>(ld(dy[i])) * ld(x[i]);
  }
  __device__ void finish(int64_t p, const double* s) const {
    dg[p] = narrow<T>(static_cast<float>(s[0] * gate_slope(ld(g[p]), sig)));
  }
};

// A gate per sample and channel: dg[b, c] = f'(g[b, c]) · Σ over the positions of dy · x, a column
// of the [per, B·C] view.
template <class T>
struct ChannelGateGrad {
  const T *x, *dy, *g;
  T* dg;
  int64_t per, C;
  bool sig;
  __device__ void operator()(int64_t r, int64_t col, double* v) const {
    const int64_t i = ((col / C) * per + r) * C + col % C;
    v[0] = static_cast<double>(ld(dy[i])) * ld(x[i]);
  }
  __device__ void store(int64_t col, const double* s) const {
    dg[col] = narrow<T>(static_cast<float>(s[0] * gate_slope(ld(g[col]), sig)));
  }
};

// BatchNorm's statistics: the mean first (kept in double for the second pass), then the centred squares.
template <class T>
struct ChannelMean {
  const T* x;
  float* mean;
  double* mean_d;
  int64_t rows, C;
  __device__ void operator()(int64_t r, int64_t c, double* v) const { v[0] = ld(x[r * C + c]); }
  __device__ void store(int64_t c, const double* s) const {
    mean_d[c] = s[0] / static_cast<double>(rows);
    mean[c] = static_cast<float>(mean_d[c]);
  }
};
template <class T>
struct ChannelVar {
  const T* x;
  const double* mean_d;
  float* var;
  int64_t rows, C;
  __device__ void operator()(int64_t r, int64_t c, double* v) const {
    const double d = ld(x[r * C + c]) - mean_d[c];
    v[0] = d * d;
  }
  __device__ void store(int64_t c, const double* s) const { var[c] = static_cast<float>(s[0] / static_cast<double>(rows)); }
};

__device__ __forceinline__ double bn_rstd(const float* var, int64_t c, float eps) {
  return 1.0 / sqrt(static_cast<double>(var[c]) + eps);
}

template <class T>
__global__ void batch_norm_kernel(const T* x, const float* w, const float* b, const float* mean, const float* var,
                                  float eps, T* y, int64_t C, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % C;
    const double v = (ld(x[i]) - static_cast<double>(mean[c])) * bn_rstd(var, c, eps) * w[c] + (b ? b[c] : 0.0);
    y[i] = narrow<T>(static_cast<float>(v));
  }
}

// Σ dy and Σ dy · x̂ per channel, kept for dx and added into dw, db.
template <class T>
struct BatchNormSums {
  const T *x, *dy;
  const float *mean, *var;
  float eps;
  double* sums;  // [C, 2]
  float *dw, *db;
  int64_t C;
  __device__ void operator()(int64_t r, int64_t c, double* v) const {
    const int64_t i = r * C + c;
    const double g = ld(dy[i]);
    v[0] = g;
    v[1] = g * (ld(x[i]) - static_cast<double>(mean[c])) * bn_rstd(var, c, eps);
  }
  __device__ void store(int64_t c, const double* s) const {
    sums[c * 2] = s[0];
    sums[c * 2 + 1] = s[1];
    if (dw) dw[c] += static_cast<float>(s[1]);
    if (db) db[c] += static_cast<float>(s[0]);
  }
};

template <class T>
__global__ void batch_norm_dx_kernel(const T* x, const float* w, const float* mean, const float* var, float eps,
                                     bool batch_stats, const T* dy, const double* sums, T* dx, int64_t rows, int64_t C,
                                     int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % C;
    const double rstd = bn_rstd(var, c, eps);
    double g = ld(dy[i]);
    if (batch_stats) {
      const double xh = (ld(x[i]) - static_cast<double>(mean[c])) * rstd, nr = static_cast<double>(rows);
      g -= sums[c * 2] / nr + xh * sums[c * 2 + 1] / nr;
    }
    dx[i] = narrow<T>(static_cast<float>(rstd * w[c] * g));
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
    case GateKind::full: return 0;
    case GateKind::position: return group_work(B * per, C, 1);
    case GateKind::channel: return column_work(per, B * C, 1);
  }
  return 0;
}

template <class T>
cudaError_t gate_backward(const T* x, const T* g, const T* dy, T* dx, T* dg, int64_t B, int64_t per, int64_t C,
                          GateKind kind, bool sigmoid, double* work, cudaStream_t s) {
  const int64_t n = B * per * C;
  if (n <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  gate_dx_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(g), dptr(dy), dptr(dx),
                                                    kind == GateKind::full ? dptr(dg) : nullptr, per, C, kind,
                                                    sigmoid, n);
  if (kind == GateKind::position)
    group_sums<1>(PositionGateGrad<E>{dptr(x), dptr(dy), dptr(g), dptr(dg), C, sigmoid}, B * per, C, work, s);
  else if (kind == GateKind::channel)
    column_sums<1>(ChannelGateGrad<E>{dptr(x), dptr(dy), dptr(g), dptr(dg), per, C, sigmoid}, per, B * C, work, s);
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
  column_sums<1>(ChannelMean<E>{dptr(x), mean, mean_d, rows, C}, rows, C, work, s);
  column_sums<1>(ChannelVar<E>{dptr(x), mean_d, var, rows, C}, rows, C, work, s);
  return cudaGetLastError();
}

template <class T>
cudaError_t batch_norm(const T* x, const float* w, const float* b, const float* mean, const float* var, float eps,
                       T* y, int64_t rows, int64_t C, cudaStream_t s) {
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
  column_sums<2>(BatchNormSums<E>{dptr(x), dptr(dy), mean, var, eps, sums, dw, db, C}, rows, C, work, s);
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
