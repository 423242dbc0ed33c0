// Plain one-thread-per-output CUDA kernels for every non-GEMM forward op: the correct baseline the
// backend runs until the tuned kernels (kernels/, written beside these) replace them op by op, and
// the GPU-side oracle those are compared with. fp32 in and out; reductions accumulate in double.
// Raw device pointers and one stream; compiled by nvcc as C++17.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mf::cuda::simple {

// act: 0 Identity, 1 GELU (erf), 2 StarReLU, 3 SquaredReLU, 4 ReLU, 5 SiLU, 6 SoftShrink (ActKind order)
void activation(const float* x, float* y, int64_t n, int act, float scale, float bias, float threshold, cudaStream_t s);
// y = x ⊙ rs + br ⊙ ls over channels C (rs, ls may be null: 1)
void scaled_residual(const float* x, const float* rs, const float* br, const float* ls, float* y, int64_t n, int64_t C,
                     cudaStream_t s);
void layer_norm(const float* x, const float* w, const float* b, float eps, float* y, int64_t rows, int64_t C,
                cudaStream_t s);
// statistics over each sample's S = numel / B values; affine per channel C
void group_norm1(const float* x, const float* w, const float* b, float eps, float* y, int64_t B, int64_t S, int64_t C,
                 cudaStream_t s);
void depthwise_conv2d(const float* x, const float* w, const float* b, float* y, int64_t B, int64_t H, int64_t W,
                      int64_t C, int kh, int kw, int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s);
void pool_minus_input(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, int kernel, cudaStream_t s);
void global_avg_pool(const float* x, float* y, int64_t B, int64_t HW, int64_t C, cudaStream_t s);
void attention(const float* qkv, float* y, int64_t B, int64_t N, int heads, int head_dim, float scale, cudaStream_t s);
// y[b, i] = x[b, i] · sc[b] over `inner` values per sample
void sample_scale(const float* x, const float* sc, float* y, int64_t B, int64_t inner, cudaStream_t s);
void channel_slice(const float* x, float* y, int64_t rows, int64_t C, int64_t offset, int64_t width, cudaStream_t s);
// see Backend::glu; c [rows, cw] or null (cw = 0)
void glu(const float* t, const float* c, float* y, int64_t rows, int64_t Ct, int64_t cw, int64_t gate_offset,
         int64_t value_offset, int64_t width, int act, float scale, float bias, float threshold, cudaStream_t s);
void channel_affine(const float* x, const float* alpha, const float* beta, float* y, int64_t n, int64_t C,
                    cudaStream_t s);
// a [rows, 2, C], b [brows, 2, C] (row r uses b row r % brows)
void complex_mul(const float* a, const float* b, float* y, int64_t rows, int64_t brows, int64_t C, bool conj_b,
                 cudaStream_t s);
// img [B, H, W, C] <-> bands [B, h2, w2, 4, C]
void haar2d(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, int64_t h2, int64_t w2, bool inverse,
            cudaStream_t s);

}  // namespace mf::cuda::simple
