// Small kernels the CUDA backend needs around its library calls (fills, the FFTs' layout changes,
// im2col for the dense convolutions, a per-token bias). Raw device pointers, one stream; compiled
// by nvcc (C++17), so nothing here includes the engine's C++20 headers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mf::cuda {

void fill(float* p, int64_t n, float value, cudaStream_t s);
// x [B, H, W, C] -> y [B, C, H, W] (and its inverse), each element times `scale`
void nhwc_to_nchw_scaled(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, float scale,
                         cudaStream_t s);
void nchw_to_nhwc_scaled(const float* x, float* y, int64_t B, int64_t C, int64_t H, int64_t W, float scale,
                         cudaStream_t s);
// z [B, C, H, Wf] complex (interleaved) -> y [B, H, Wf, 2, C] split, times `scale`, columns
// 1 .. ceil(W/2)-1 also times mid_scale
void spectrum_split(const float* z, float* y, int64_t B, int64_t C, int64_t H, int64_t Wf, int64_t W, float scale,
                    float mid_scale, cudaStream_t s);
// x [B, H, Wf, 2, C] split -> z [B, C, Wf, H] complex, the same scaling (H contiguous: the inverse
// transform along H comes first)
void spectrum_join_transposed(const float* x, float* z, int64_t B, int64_t C, int64_t H, int64_t Wf, int64_t W,
                              float scale, float mid_scale, cudaStream_t s);
// complex z [N, R, S] -> [N, S, R]
void transpose_complex(const float* z, float* y, int64_t N, int64_t R, int64_t S, cudaStream_t s);
// y [B, M, C] += bias[m]
void add_token_bias(float* y, const float* bias, int64_t B, int64_t M, int64_t C, cudaStream_t s);
// the same on bf16 storage (y is __nv_bfloat16), the sum in fp32
void add_token_bias_bf16(void* y, const float* bias, int64_t B, int64_t M, int64_t C, cudaStream_t s);

}  // namespace mf::cuda
