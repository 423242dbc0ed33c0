// RaftMLP's and MS-MLP's layout ops: an axis permutation, the grouped cyclic shift and torch's bicubic
// resize with its adjoint. Pure index arithmetic, one thread per output element.
#include "ops/cuda/backward_common.cuh"
#include "ops/cuda/families/family_kernels.h"

namespace mf::cuda::families {
namespace {

using backward::detail::blocks_for;
using backward::detail::dptr;
using backward::detail::DevT;
using backward::detail::kThreads;
using backward::detail::ld;
using backward::detail::narrow;

struct PermuteGeometry {
  int rank;
  int64_t out_dim[kMaxRank];
  int64_t in_stride[kMaxRank];  // the stride in x of output axis a (x's axis perm[a])
};

template <class T>
__global__ void permute_kernel(const T* x, T* y, PermuteGeometry g, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    int64_t rest = i, src = 0;
    for (int a = g.rank - 1; a >= 0; --a) {
      src += (rest % g.out_dim[a]) * g.in_stride[a];
      rest /= g.out_dim[a];
    }
    y[i] = x[src];
  }
}

struct Shifts {
  int v[kMaxShiftGroups];
};

template <class T>
__global__ void spatial_shift_kernel(const T* x, T* y, int64_t B, int64_t H, int64_t W, int64_t C, int axis,
                                     int64_t group_width, Shifts shifts, int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % C;
    int64_t r = i / C;
    const int64_t w = r % W;
    r /= W;
    const int64_t h = r % H, b = r / H;
    const int64_t len = axis == 1 ? H : W, at = axis == 1 ? h : w;
    const int64_t s = shifts.v[c / group_width];
    const int64_t from = ((at - s) % len + len) % len;
    const int64_t sh = axis == 1 ? from : h, sw = axis == 1 ? w : from;
    y[i] = x[((b * H + sh) * W + sw) * C + c];
  }
}

// Forward: y [B, ay.out, ax.out, C] from x [B, ay.in, ax.in, C] by the 4 × 4 taps of each output.
template <class T>
__global__ void bicubic_forward_kernel(const T* x, T* y, int64_t B, int64_t C, BicubicAxis ay, BicubicAxis ax,
                                       int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % C;
    int64_t r = i / C;
    const int64_t ox = r % ax.out;
    r /= ax.out;
    const int64_t oy = r % ay.out, b = r / ay.out;
    double sum = 0;
    for (int u = 0; u < 4; ++u) {
      const double wy = ay.weight[oy * 4 + u];
      const int64_t row = (b * ay.in + ay.index[oy * 4 + u]) * ax.in;
      for (int v = 0; v < 4; ++v)
        sum += wy * ax.weight[ox * 4 + v] * static_cast<double>(ld(x[(row + ax.index[ox * 4 + v]) * C + c]));
    }
    y[i] = narrow<T>(static_cast<float>(sum));
  }
}

// Adjoint: y [B, ay.in, ax.in, C] gathers from x [B, ay.out, ax.out, C] through the transposed tables.
template <class T>
__global__ void bicubic_adjoint_kernel(const T* x, T* y, int64_t B, int64_t C, BicubicAxis ay, BicubicAxis ax,
                                       int64_t n) {
  MF_GRID_STRIDE(i, n) {
    const int64_t c = i % C;
    int64_t r = i / C;
    const int64_t ix = r % ax.in;
    r /= ax.in;
    const int64_t iy = r % ay.in, b = r / ay.in;
    double sum = 0;
    for (int u = ay.adj_begin[iy]; u < ay.adj_begin[iy + 1]; ++u) {
      const double wy = ay.adj_weight[u];
      const int64_t row = (b * ay.out + ay.adj_out[u]) * ax.out;
      for (int v = ax.adj_begin[ix]; v < ax.adj_begin[ix + 1]; ++v)
        sum += wy * ax.adj_weight[v] * static_cast<double>(ld(x[(row + ax.adj_out[v]) * C + c]));
    }
    y[i] = narrow<T>(static_cast<float>(sum));
  }
}

}  // namespace

template <class T>
cudaError_t permute(const T* x, T* y, int rank, const int64_t* dims, const int* perm, cudaStream_t s) {
  if (rank < 1 || rank > kMaxRank) return cudaErrorInvalidValue;
  int64_t stride[kMaxRank], n = 1;
  for (int a = rank - 1; a >= 0; --a) {
    stride[a] = n;
    n *= dims[a];
  }
  PermuteGeometry g{};
  g.rank = rank;
  for (int a = 0; a < rank; ++a) {
    if (perm[a] < 0 || perm[a] >= rank) return cudaErrorInvalidValue;
    g.out_dim[a] = dims[perm[a]];
    g.in_stride[a] = stride[perm[a]];
  }
  if (n <= 0) return cudaSuccess;
  permute_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), g, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t spatial_shift(const T* x, T* y, int64_t B, int64_t H, int64_t W, int64_t C, int axis,
                          int64_t group_width, const int* shifts, int groups, cudaStream_t s) {
  if ((axis != 1 && axis != 2) || group_width <= 0 || groups > kMaxShiftGroups || groups * group_width < C)
    return cudaErrorInvalidValue;
  Shifts sh{};
  for (int g = 0; g < groups; ++g) sh.v[g] = shifts[g];
  const int64_t n = B * H * W * C;
  if (n <= 0) return cudaSuccess;
  spatial_shift_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), B, H, W, C, axis, group_width, sh, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t resize_bicubic(const T* x, T* y, int64_t B, int64_t C, const BicubicAxis& ay, const BicubicAxis& ax,
                           bool adjoint, cudaStream_t s) {
  const int64_t n = B * (adjoint ? ay.in * ax.in : ay.out * ax.out) * C;
  if (n <= 0) return cudaSuccess;
  if (adjoint)
    bicubic_adjoint_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), B, C, ay, ax, n);
  else
    bicubic_forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(dptr(x), dptr(y), B, C, ay, ax, n);
  return cudaGetLastError();
}

#define MF_LAYOUT_INSTANTIATE(T)                                                                                  \
  template cudaError_t permute<T>(const T*, T*, int, const int64_t*, const int*, cudaStream_t);                   \
  template cudaError_t spatial_shift<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int, int64_t,           \
                                        const int*, int, cudaStream_t);                                           \
  template cudaError_t resize_bicubic<T>(const T*, T*, int64_t, int64_t, const BicubicAxis&, const BicubicAxis&, \
                                         bool, cudaStream_t);
MF_LAYOUT_INSTANTIATE(float)
MF_LAYOUT_INSTANTIATE(bf16)
#undef MF_LAYOUT_INSTANTIATE

}  // namespace mf::cuda::families
