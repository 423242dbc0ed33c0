// PoNet's multi-granularity pooling, forward and backward (family_math.h's Ponet): the global
// attention pooling one thread a sequence, the segment and local maxima one thread an element, and the
// backward pass as gathers. Sums in double; correct first.
#include "ops/cuda/families/launch.cuh"

namespace mf::cuda::families {
namespace {

template <class T>
__global__ void ponet_global_kernel(math::Ponet<T> pn, int64_t B, double* work) {
  MF_GRID_STRIDE(b, B) { pn.global(b, work + b * pn.work_per_sequence()); }
}

template <class T>
__global__ void ponet_forward_kernel(math::Ponet<T> pn, T* y, const double* work, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % pn.C, t = (i / pn.C) % pn.L, b = i / (pn.C * pn.L);
    y[i] = narrow<T>(static_cast<float>(pn.forward_at(b, t, c, work + b * pn.work_per_sequence())));
  }
}

template <class T>
__global__ void ponet_dg2_kernel(math::Ponet<T> pn, const T* dy, double* work, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t b = i / pn.C;
    pn.dg2_at(dy, b, i % pn.C, work + b * pn.work_per_sequence());
  }
}

template <class T>
__global__ void ponet_global_backward_kernel(math::Ponet<T> pn, int64_t B, double* work) {
  MF_GRID_STRIDE(b, B) { pn.global_backward(b, work + b * pn.work_per_sequence()); }
}

template <class T>
__global__ void ponet_dp_kernel(math::Ponet<T> pn, const T* dy, const double* work, T* dp, int64_t n) {
  MF_GRID_STRIDE(e, n) { dp[e] = narrow<T>(static_cast<float>(pn.dp_at(dy, e, work))); }
}

}  // namespace

int64_t ponet_pool_work(int64_t B, int64_t L, int64_t C, int heads) { return B * (4 * C + 2 * heads * L); }

template <class T>
cudaError_t ponet_pool(const T* p, T* y, int64_t B, int64_t L, int64_t C, int heads, int64_t segment, int local,
                       double* work, cudaStream_t s) {
  if (heads < 1 || C % heads != 0 || segment < 1 || local < 1) return cudaErrorInvalidValue;
  const int64_t n = B * L * C;
  if (n <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  const math::Ponet<E> pn{dptr(p), L, C, heads, C / heads, segment, local};
  ponet_global_kernel<<<blocks_for(B, 32), 32, 0, s>>>(pn, B, work);
  ponet_forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(pn, dptr(y), work, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t ponet_pool_backward(const T* p, const T* dy, T* dp, int64_t B, int64_t L, int64_t C, int heads,
                                int64_t segment, int local, double* work, cudaStream_t s) {
  if (heads < 1 || C % heads != 0 || segment < 1 || local < 1) return cudaErrorInvalidValue;
  const int64_t n = B * L * C;
  if (n <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  const math::Ponet<E> pn{dptr(p), L, C, heads, C / heads, segment, local};
  ponet_global_kernel<<<blocks_for(B, 32), 32, 0, s>>>(pn, B, work);
  ponet_dg2_kernel<<<blocks_for(B * C), kThreads, 0, s>>>(pn, dptr(dy), work, B * C);
  ponet_global_backward_kernel<<<blocks_for(B, 32), 32, 0, s>>>(pn, B, work);
  ponet_dp_kernel<<<blocks_for(6 * n), kThreads, 0, s>>>(pn, dptr(dy), work, dptr(dp), 6 * n);
  return cudaGetLastError();
}

#define MF_PONET_INSTANTIATE(T)                                                                                     \
  template cudaError_t ponet_pool<T>(const T*, T*, int64_t, int64_t, int64_t, int, int64_t, int, double*,           \
                                     cudaStream_t);                                                                 \
  template cudaError_t ponet_pool_backward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int, int64_t, int, \
                                              double*, cudaStream_t);
MF_PONET_INSTANTIATE(float)
MF_PONET_INSTANTIATE(bf16)
#undef MF_PONET_INSTANTIATE

}  // namespace mf::cuda::families
