// Spectral mixers' own kernels (the FFTs are cuFFT's): the complex product of the split layout
// between the transforms, and the one-level orthonormal Haar wavelet transform and its inverse.
#include "common.cuh"

namespace mf::cuda::kernels {
namespace {

constexpr int kBlock = 256;

// a, y [rows, 2, C]; b [brows, 2, C]; thread per (row, channel).
template <typename T>
__global__ void complex_mul_kernel(const T* a, const T* b, T* y, int64_t rows, int64_t brows, int64_t C, float sign) {
  const int64_t n = rows * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / C, c = i % C;
    const T* pa = a + r * 2 * C;
    const T* pb = b + (r % brows) * 2 * C;
    const float ar = to_f(pa[c]), ai = to_f(pa[C + c]), br = to_f(pb[c]), bi = sign * to_f(pb[C + c]);
    const float re = ar * br - ai * bi, im = ar * bi + ai * br;
    y[r * 2 * C + c] = from_f<T>(re);
    y[r * 2 * C + C + c] = from_f<T>(im);
  }
}

// The 2×2 block (p0 p1 / p2 p3) and the bands (LL, top − bottom, left − right, HH) are related by
// the symmetric orthogonal matrix rows (+ + + +), (+ + − −), (+ − + −), (+ − − +), all / 2.
// Thread per (block, channel); pixels outside the image are zero (forward) or dropped (inverse).
template <typename T, bool kInverse>
__global__ void haar_kernel(const T* in, T* out, int64_t B, int64_t H, int64_t W, int64_t C) {
  const int64_t h2 = (H + 1) / 2, w2 = (W + 1) / 2, n = B * h2 * w2 * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % C;
    int64_t r = i / C;
    const int64_t j = r % w2;
    r /= w2;
    const int64_t bi = r % h2, b = r / h2;
    const int64_t band0 = ((b * h2 + bi) * w2 + j) * 4 * C + c;  // band s at band0 + s·C
    int64_t pix[4];
    bool inside[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t y = 2 * bi + q / 2, x = 2 * j + q % 2;
      inside[q] = y < H && x < W;
      pix[q] = ((b * H + y) * W + x) * C + c;
    }
    float v[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) v[q] = kInverse ? to_f(in[band0 + q * C]) : (inside[q] ? to_f(in[pix[q]]) : 0.f);
    const float s0 = 0.5f * ((v[0] + v[1]) + (v[2] + v[3]));
    const float s1 = 0.5f * ((v[0] + v[1]) - (v[2] + v[3]));
    const float s2 = 0.5f * ((v[0] - v[1]) + (v[2] - v[3]));
    const float s3 = 0.5f * ((v[0] - v[1]) - (v[2] - v[3]));
    const float res[4] = {s0, s1, s2, s3};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if (kInverse) {
        if (inside[q]) out[pix[q]] = from_f<T>(res[q]);
      } else {
        out[band0 + q * C] = from_f<T>(res[q]);
      }
    }
  }
}

template <typename T>
cudaError_t complex_mul_launch(const T* a, const T* b, T* y, int64_t rows, int64_t brows, int64_t C, bool conj_b,
                               cudaStream_t s) {
  if (brows <= 0 || rows % brows != 0) return cudaErrorInvalidValue;
  if (rows <= 0 || C <= 0) return cudaSuccess;
  complex_mul_kernel<<<grid_for(rows * C, kBlock), kBlock, 0, s>>>(dev(a), dev(b), dev(y), rows, brows, C,
                                                                   conj_b ? -1.f : 1.f);
  return cudaGetLastError();
}

template <typename T, bool kInverse>
cudaError_t haar_launch(const T* in, T* out, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s) {
  const int64_t n = B * ((H + 1) / 2) * ((W + 1) / 2) * C;
  if (n <= 0) return cudaSuccess;
  haar_kernel<typename Dev<T>::type, kInverse><<<grid_for(n, kBlock), kBlock, 0, s>>>(dev(in), dev(out), B, H, W, C);
  return cudaGetLastError();
}

}  // namespace

cudaError_t complex_mul(const float* a, const float* b, float* y, int64_t rows, int64_t brows, int64_t C, bool conj_b,
                        cudaStream_t s) {
  return complex_mul_launch(a, b, y, rows, brows, C, conj_b, s);
}
cudaError_t complex_mul(const bf16* a, const bf16* b, bf16* y, int64_t rows, int64_t brows, int64_t C, bool conj_b,
                        cudaStream_t s) {
  return complex_mul_launch(a, b, y, rows, brows, C, conj_b, s);
}
cudaError_t haar2d(const float* x, float* bands, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s) {
  return haar_launch<float, false>(x, bands, B, H, W, C, s);
}
cudaError_t haar2d(const bf16* x, bf16* bands, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s) {
  return haar_launch<bf16, false>(x, bands, B, H, W, C, s);
}
cudaError_t haar2d_inverse(const float* bands, float* x, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s) {
  return haar_launch<float, true>(bands, x, B, H, W, C, s);
}
cudaError_t haar2d_inverse(const bf16* bands, bf16* x, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s) {
  return haar_launch<bf16, true>(bands, x, B, H, W, C, s);
}

}  // namespace mf::cuda::kernels
