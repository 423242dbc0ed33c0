// RaftMLP's and MS-MLP's layout ops: an axis permutation, the grouped cyclic shift and torch's bicubic
// resize with its adjoint. Pure index arithmetic, one thread per output element.
#include "ops/cuda/families/launch.cuh"

namespace mf::cuda::families {
namespace {

template <class T>
__global__ void permute_kernel(const T* x, T* y, PermuteGeometry g, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = x[math::permute_source(i, g)]; }
}

template <class T>
__global__ void spatial_shift_kernel(const T* x, T* y, int64_t H, int64_t W, int64_t C, int axis, int64_t group_width,
                                     Shifts shifts, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = x[math::shift_source(i, H, W, C, axis, group_width, shifts.v)]; }
}

template <class T>
__global__ void bicubic_forward_kernel(const T* x, T* y, int64_t C, BicubicAxis ay, BicubicAxis ax, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(static_cast<float>(math::bicubic_forward_at(x, i, C, ay, ax))); }
}

template <class T>
__global__ void bicubic_adjoint_kernel(const T* x, T* y, int64_t C, BicubicAxis ay, BicubicAxis ax, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(static_cast<float>(math::bicubic_adjoint_at(x, i, C, ay, ax))); }
}

}  // namespace

template <class T>
cudaError_t permute(const T* x, T* y, int rank, const int64_t* dims, const int* perm, cudaStream_t s) {
  PermuteGeometry g{};
  if (!math::permute_geometry(rank, dims, perm, g)) return cudaErrorInvalidValue;
  int64_t n = 1;
  for (int a = 0; a < rank; ++a) n *= dims[a];
  if (n <= 0) return cudaSuccess;
  permute_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), g, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t spatial_shift(const T* x, T* y, int64_t B, int64_t H, int64_t W, int64_t C, int axis, int64_t group_width,
                          const int* shifts, int groups, cudaStream_t s) {
  if ((axis != 1 && axis != 2) || group_width <= 0 || groups > kMaxShiftGroups || groups * group_width < C)
    return cudaErrorInvalidValue;
  Shifts sh{};
  for (int g = 0; g < groups; ++g) sh.v[g] = shifts[g];
  const int64_t n = B * H * W * C;
  if (n <= 0) return cudaSuccess;
  spatial_shift_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), H, W, C, axis, group_width, sh, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t resize_bicubic(const T* x, T* y, int64_t B, int64_t C, const BicubicAxis& ay, const BicubicAxis& ax,
                           bool adjoint, cudaStream_t s) {
  const int64_t n = B * (adjoint ? ay.in * ax.in : ay.out * ax.out) * C;
  if (n <= 0) return cudaSuccess;
  if (adjoint)
    bicubic_adjoint_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), C, ay, ax, n);
  else
    bicubic_forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), C, ay, ax, n);
  return cudaGetLastError();
}

#define MF_LAYOUT_INSTANTIATE(T)                                                                                       \
  template cudaError_t permute<T>(const T*, T*, int, const int64_t*, const int*, cudaStream_t);                        \
  template cudaError_t spatial_shift<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int, int64_t, const int*,    \
                                        int, cudaStream_t);                                                            \
  template cudaError_t resize_bicubic<T>(const T*, T*, int64_t, int64_t, const BicubicAxis&, const BicubicAxis&, bool, \
                                         cudaStream_t);
MF_LAYOUT_INSTANTIATE(float)
MF_LAYOUT_INSTANTIATE(bf16)
#undef MF_LAYOUT_INSTANTIATE

}  // namespace mf::cuda::families
