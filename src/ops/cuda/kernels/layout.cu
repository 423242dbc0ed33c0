// Layout changes at the model boundary: NCHW <-> NHWC, as batched 2-D transposes of [R, S] -> [S, R]
// (NCHW -> NHWC: R = C, S = H·W) through 32×33 shared-memory tiles, so both the reads and the
// writes are coalesced.
#include "common.cuh"

namespace mf::cuda::kernels {
namespace {

constexpr int kTile = 32, kRowsPerPass = 8;

// x [N, R, S] -> y [N, S, R]; grid (tiles of S, tiles of R, N).
template <typename TI, typename TO>
__global__ void transpose_kernel(const TI* x, TO* y, int64_t R, int64_t S) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t n = blockIdx.z;
  const int64_t s0 = int64_t(blockIdx.x) * kTile, r0 = int64_t(blockIdx.y) * kTile;
  const TI* xn = x + n * R * S;
  TO* yn = y + n * R * S;
  for (int j = threadIdx.y; j < kTile; j += kRowsPerPass) {
    const int64_t r = r0 + j, s = s0 + threadIdx.x;
    if (r < R && s < S) tile[j][threadIdx.x] = to_f(xn[r * S + s]);
  }
  __syncthreads();
  for (int j = threadIdx.y; j < kTile; j += kRowsPerPass) {
    const int64_t s = s0 + j, r = r0 + threadIdx.x;
    if (r < R && s < S) yn[s * R + r] = from_f<TO>(tile[threadIdx.x][j]);
  }
}

template <typename TI, typename TO>
cudaError_t transpose_launch(const TI* x, TO* y, int64_t N, int64_t R, int64_t S, cudaStream_t s) {
  if (N <= 0 || R <= 0 || S <= 0) return cudaSuccess;
  const int64_t gs = (S + kTile - 1) / kTile, gr = (R + kTile - 1) / kTile;
  if (gr > 65535 || N > 65535 || gs > 0x7fffffff) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(gs), static_cast<unsigned>(gr), static_cast<unsigned>(N));
  transpose_kernel<<<grid, dim3(kTile, kRowsPerPass), 0, s>>>(dev(x), dev(y), R, S);
  return cudaGetLastError();
}

}  // namespace

cudaError_t nchw_to_nhwc(const float* x, float* y, int64_t B, int64_t C, int64_t H, int64_t W, cudaStream_t s) {
  return transpose_launch(x, y, B, C, H * W, s);
}
cudaError_t nchw_to_nhwc(const bf16* x, bf16* y, int64_t B, int64_t C, int64_t H, int64_t W, cudaStream_t s) {
  return transpose_launch(x, y, B, C, H * W, s);
}
cudaError_t nchw_to_nhwc(const float* x, bf16* y, int64_t B, int64_t C, int64_t H, int64_t W, cudaStream_t s) {
  return transpose_launch(x, y, B, C, H * W, s);
}
cudaError_t nhwc_to_nchw(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s) {
  return transpose_launch(x, y, B, H * W, C, s);
}
cudaError_t nhwc_to_nchw(const bf16* x, bf16* y, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s) {
  return transpose_launch(x, y, B, H * W, C, s);
}

}  // namespace mf::cuda::kernels
