// Token ops: the position table added to every sequence (Strip-MLP's and iFormer's position
// embeddings, the sequence stems), and its gradient summed over the batch in a fixed order.
#include "ops/cuda/backward_common.cuh"
#include "ops/cuda/families/family_kernels.h"

namespace mf::cuda::families {
namespace {

using backward::detail::blocks_for;
using backward::detail::column_sums;
using backward::detail::column_work;
using backward::detail::DevT;
using backward::detail::dptr;
using backward::detail::kThreads;
using math::narrow;

template <class T>
__global__ void add_positions_kernel(const T* x, const float* pos, T* y, int64_t ND, int64_t n) {
  MF_GRID_STRIDE(i, n) { y[i] = narrow<T>(static_cast<float>(math::add_positions_at(x, pos, i, ND))); }
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

#define MF_TOKENS_INSTANTIATE(T)                                                                              \
  template cudaError_t add_positions<T>(const T*, const float*, T*, int64_t, int64_t, int64_t, cudaStream_t); \
  template cudaError_t add_positions_backward<T>(const T*, float*, int64_t, int64_t, int64_t, double*, cudaStream_t);
MF_TOKENS_INSTANTIATE(float)
MF_TOKENS_INSTANTIATE(bf16)
#undef MF_TOKENS_INSTANTIATE

}  // namespace mf::cuda::families
