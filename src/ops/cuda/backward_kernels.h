// Backward kernels of the CUDA backend (issue 13; docs/cuda.md "Backward passes"): the parts of the
// backward passes that are not GEMMs (those go to cuBLASLt, from cuda_backward.cpp). Activations and
// their gradients stored in fp32, or in bf16 for the templated functions (train --dtype bf16; the
// arithmetic and the parameter gradients stay fp32 and double).
// Written to be obviously right before fast: one thread per output element (gathers, never
// scatters), and every reduction (norm statistics, parameter gradients) in double, in a fixed order,
// without atomics, so that the results are deterministic and within float rounding of the reference
// backend (which accumulates in double too). The semantics are those of src/ops/ref/*.cpp, including
// which gradients are overwritten and which accumulated (+=).
//
// Raw device pointers and one stream; compiled by nvcc as C++17 (nothing here includes the engine's
// C++20 headers). Each function returns cudaGetLastError() after its launches. Functions that
// reduce take a device workspace `work` of the number of doubles their *_work function gives.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ops/cuda/kernels/kernels.h"

namespace mf::cuda::backward {

using kernels::bf16;

// An activation, in mf::ActKind's order: 0 Identity, 1 GELU (erf), 2 StarReLU (scale · relu(x)² +
// bias), 3 SquaredReLU, 4 ReLU, 5 SiLU, 6 SoftShrink (threshold).
struct Act {
  int kind = 0;
  float scale = 1.f;
  float bias = 0.f;
  float threshold = 0.f;
  // StarReLU's scale and bias read on the device (a GPU run's parameters) instead of scale, bias.
  const float* scale_p = nullptr;
  const float* bias_p = nullptr;
};

// db[n] += Σ_m dy[m, n] (dy [M, N]): a Linear's or a convolution's bias gradient.
int64_t column_sum_work(int64_t rows, int64_t cols);
cudaError_t column_sum_add(const float* dy, float* db, int64_t rows, int64_t cols, double* work, cudaStream_t s);
cudaError_t column_sum_add(const bf16* dy, float* db, int64_t rows, int64_t cols, double* work, cudaStream_t s);

// dbias[m] += Σ_b Σ_c dy[b, m, c] (dy [B, M, C]): a token-mixing map's bias gradient.
int64_t token_bias_grad_work(int64_t B, int64_t M, int64_t C);
cudaError_t token_bias_grad_add(const float* dy, float* dbias, int64_t B, int64_t M, int64_t C, double* work,
                                cudaStream_t s);

// LayerNorm (groups = rows, n = C) and GroupNorm with one group (groups = B, n = H·W·C) backward:
// x̂ = (x − mean) · rstd over each group of n values, channel of element i = i % C;
// dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)) with g = dy · w (overwritten);
// dw[c] += Σ dy · x̂, db[c] += Σ dy (either may be null). With `res` (a block's skip gradient):
// dx = res + that, the norm's value rounded to float first (fp32: the bits of a separate add); with
// `rs` too (the block's res scale; only where norm_backward_fuses_res_scale, else cudaErrorInvalidValue)
// dx = res · rs[c] + that, and d_rs[c] += Σ x · res (d_rs may be null).
int64_t norm_backward_work(int64_t groups, int64_t n, int64_t C);
bool norm_backward_fuses_res_scale(int64_t n, int64_t C);
// T: float, or bf16 (x, dy and dx stored in bf16; the sums in fp32 and double as for float).
template <class T>
cudaError_t norm_backward(const T* x, const float* w, const T* dy, float eps, T* dx, float* dw, float* db,
                          int64_t groups, int64_t n, int64_t C, double* work, cudaStream_t s, const T* res = nullptr,
                          const float* rs = nullptr, float* d_rs = nullptr);

// dx = dy · act'(x) (overwritten); for StarReLU: dscale[0] += Σ dy · relu(x)², dbias[0] += Σ dy
// (either may be null).
int64_t activation_backward_work(int64_t n);
// T: float or bf16.
template <class T>
cudaError_t activation_backward(const T* x, Act act, const T* dy, T* dx, float* dscale, float* dbias, int64_t n,
                                double* work, cudaStream_t s);

// y = x ⊙ rs + branch ⊙ ls backward over rows × C: dx = dy ⊙ rs (dx null: not written), dbranch = dy ⊙ ls
// (rs, ls null: 1);
// d_rs[c] += Σ dy · x, d_ls[c] += Σ dy · branch (either may be null; x is read only for d_rs and
// branch only for d_ls, so either may be null without its gradient).
int64_t scaled_residual_backward_work(int64_t rows, int64_t C);
// T: float or bf16 (the scales and their gradients are float).
template <class T>
cudaError_t scaled_residual_backward(const T* x, const float* rs, const T* branch, const float* ls, const T* dy, T* dx,
                                     T* dbranch, float* d_rs, float* d_ls, int64_t rows, int64_t C, double* work,
                                     cudaStream_t s);

// The folded layer scale's parameter gradients (layer_scale_backward.cu): with G = dyᵀ · h [N, K] and
// s = Σ_rows dy [N] from the GEMMs of the folded weight ls ⊙ w, dw += ls ⊙ G (by rows), db += ls ⊙ s
// and dls[n] += Σ_k w[n, k] · G[n, k] + b[n] · s[n]. s and b may be null (no bias), as may any of
// the gradients; G is read only for dw and dls (null without them), w only for dls.
cudaError_t layer_scale_fold_grads(const float* G, const float* s, const float* w, const float* b, const float* ls,
                                   float* dw, float* db, float* dls, int64_t N, int64_t K, cudaStream_t st);

// ResMLP's Affine y = x ⊙ alpha + beta over [rows, C]: dx = dy ⊙ alpha; dalpha, dbeta (when given)
// += the column sums of dy ⊙ x and of dy.
int64_t channel_affine_backward_work(int64_t rows, int64_t C);
cudaError_t channel_affine_backward(const float* x, const float* alpha, const float* dy, float* dx, float* dalpha,
                                    float* dbeta, int64_t rows, int64_t C, double* work, cudaStream_t s);

// The spectral filter's weight gradient (GFNet, AFF): y[r] = a[r] ⊙ b[r mod brows] in complex numbers,
// rows [re C | im C]; db[br] += Σ over the rows r ≡ br (mod brows) of dy[r] ⊙ conj(a[r]), in double
// in a fixed order. (da = dy ⊙ conj(b) is the forward complex_mul.)
int64_t complex_mul_weight_grad_work(int64_t rows, int64_t brows, int64_t C);
cudaError_t complex_mul_weight_grad(const float* a, const float* dy, float* db, int64_t rows, int64_t brows, int64_t C,
                                    double* work, cudaStream_t s);

// dx [B, HW, C] = dy [B, C] / HW
// T: float or bf16.
template <class T>
cudaError_t global_avg_pool_backward(const T* dy, T* dx, int64_t B, int64_t HW, int64_t C, cudaStream_t s);

// dx [rows, C] += dy [rows, width] at channels [offset, offset + width)
// T: float or bf16.
template <class T>
cudaError_t channel_slice_backward(const T* dy, T* dx, int64_t rows, int64_t C, int64_t offset, int64_t width,
                                   cudaStream_t s);

// Backend::glu's backward: dt [rows, Ct] overwritten (zero outside the gate and value windows), dc
// [rows, cw] overwritten (may be null). T: float or bf16. Fewer than 2^31 elements in t, dy and c
// (cudaErrorInvalidValue otherwise).
template <class T>
cudaError_t glu_backward(const T* t, int64_t Ct, const T* c, int64_t cw, int64_t gate_offset, int64_t value_offset,
                         Act act, const T* dy, int64_t width, T* dt, T* dc, int64_t rows, cudaStream_t s);

// The adjoint of y = avg_pool_k(x) − x (stride 1, padding k/2, padded cells not counted): dx overwritten.
// T: float or bf16.
template <class T>
cudaError_t pool_minus_input_backward(const T* dy, T* dx, int64_t B, int64_t H, int64_t W, int64_t C, int kernel,
                                      cudaStream_t s);

// Depthwise convolution x [B, H, W, C], w [C, 1, kh, kw], dy [B, Ho, Wo, C]: dx overwritten (may be
// null), dw += and db += (either may be null).
// For kernel benchmarks (bench/cuda_dev): the depthwise weight gradient's variant, by one of
// METAFORMER_CUDA_DW_DW's names, for the calls that follow; null or "" goes back to the environment's
// choice. False (and no change) for a name that is no variant.
bool set_depthwise_weight_grad_variant(const char* name);
int64_t depthwise_backward_work(int64_t B, int64_t Ho, int64_t Wo, int64_t C, int kh, int kw);
// T: float or bf16 (x, dy, dx; the weight and its gradients are float). ldx: x's pixel stride (0: C),
// for an x that is a channel slice of a wider tensor; other than C only for square 3×3, 5×5 and 7×7
// kernels (cudaErrorInvalidValue elsewhere).
template <class T>
cudaError_t depthwise_conv2d_backward(const T* x, const float* w, const T* dy, T* dx, float* dw, float* db, int64_t B,
                                      int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, int kh, int kw, int sh,
                                      int sw, int ph, int pw, double* work, cudaStream_t s, int64_t ldx = 0);

// dw += the weight gradient of the depthwise convolution of act(x) (x the pre-activation; act applied
// inside the map only, the padding staying zero), in the same workspace as depthwise_conv2d_backward's,
// without act(x) in memory: the tiled dW kernel with act applied as it stages x, where that kernel
// applies (bf16, square 3×3/5×5/7×7 kernels at stride 1, channels in 16-byte vectors, maps of 14 rows
// or more, METAFORMER_CUDA_DW_DW=tiled) and act is StarReLU or GELU. Elsewhere `done` is false and
// nothing is launched: the caller materialises act(x) and runs depthwise_conv2d_backward.
template <class T>
cudaError_t act_depthwise_weight_grad(const T* x, Act act, const T* dy, float* dw, int64_t B, int64_t H, int64_t W,
                                      int64_t C, int64_t Ho, int64_t Wo, int kh, int kw, int sh, int sw, int ph, int pw,
                                      double* work, cudaStream_t s, bool& done);

// Dense convolution helpers (the products are cuBLASLt's; the weight's GEMM layout is
// kernels::conv_weight_to_gemm): dw [Co, Ci, kh, kw] += dwk [Co, kh, kw, Ci]; and col2im, the adjoint
// of im2col_nhwc: dx [B, H, W, C] (overwritten) = Σ of the columns dcols [B·Ho·Wo, kh·kw·C] that read
// each pixel.
// A depthwise weight [C, 1, kh, kw] turned by 180° into [kh, kw, C] (the forward kernel's layout):
// at stride 1 its convolution of dy is dx.
cudaError_t depthwise_weight_flip_hwc(const float* w, float* flipped, int64_t C, int kh, int kw, cudaStream_t s);
// dw [Co, Ci, kh, kw] += dwk [Co, kh·kw·Ci] (rows ldk ≥ kh·kw·Ci apart).
cudaError_t conv_weight_grad_add(const float* dwk, int64_t ldk, float* dw, int64_t Co, int64_t Ci, int kh, int kw,
                                 cudaStream_t s);
// T: float or bf16.
template <class T>
cudaError_t col2im_nhwc(const T* dcols, T* dx, int64_t B, int64_t H, int64_t W, int64_t C, int kh, int kw, int sh,
                        int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s);

// The default attention backward runs its five products through cuBLASLt (cuda_backward.cpp) and
// this kernel between them, over `rows` rows of N: S (the raw products q·k) becomes P =
// softmax(scale · S) and dP (dy·v) becomes scale · P ⊙ (dP − rowsum(P ⊙ dP)); row sums in double.
cudaError_t attention_softmax_grad(float* S, float* dP, int64_t rows, int64_t N, float scale, cudaStream_t s);
// The same for bf16 training: P and dS written as bf16 into their own buffers (S, dP unchanged), the
// exponentials in float.
cudaError_t attention_softmax_grad(const float* S, const float* dP, bf16* P, bf16* dS, int64_t rows, int64_t N,
                                   float scale, cudaStream_t s);

// Attention backward (Backend::attention_backward) for `batch` samples: qkv [batch, N, 3·heads·d],
// dy [batch, N, heads·d] -> dqkv (overwritten). The probabilities P and dS = P ⊙ (dP − rowsum(P ⊙ dP))
// are materialised, N×N per sample and head, in double, in `work` (attention_backward_work doubles):
// the straightforward version; the caller chunks the batch to bound it.
int64_t attention_backward_work(int64_t batch, int64_t N, int heads);
cudaError_t attention_backward(const float* qkv, const float* dy, float* dqkv, int64_t batch, int64_t N, int heads,
                               int head_dim, float scale, double* work, cudaStream_t s);

// The same gradient without P and dS in global memory (attention_backward.cu): P recomputed from q
// and k, one warp per query row for dq and the row statistics, one warp per key row for dk and dv;
// in double, in a fixed order. Head sizes up to 128; `work` holds 3 doubles per (sample, head, row).
// Chosen with METAFORMER_CUDA_ATTN_BWD=fused until the device A/B has checked it (docs/cuda.md).
bool attention_backward_fused_supports(int head_dim);
int64_t attention_backward_fused_work(int64_t batch, int64_t N, int heads);
cudaError_t attention_backward_fused(const float* qkv, const float* dy, float* dqkv, int64_t batch, int64_t N,
                                     int heads, int head_dim, float scale, double* work, cudaStream_t s);

// The same gradient in bf16 on the tensor cores (attention_backward_wmma.cu): one block per (sample,
// head) with q, k, v and dO in shared memory, WMMA products with fp32 accumulation, P and dS rounded
// to bf16 for the products that read them, as the default (GEMM) version does in bf16. Head sizes 32
// and 64, up to 288 tokens (192 at 64), 16-byte aligned pointers; no workspace. With bf16 activations
// where the mma kernel below does not apply (METAFORMER_CUDA_ATTN_BWD=gemm turns both off).
// tiles = true (METAFORMER_CUDA_ATTN_BWD=tiles, and mma's fallback for head size 64): the key-tile
// kernel of the same file (warps that work alone between two barriers, the scores recomputed), any token count
// whose tiles fit in 200 KB of shared memory; false: the previous kernel, up to 288 tokens.
bool attention_backward_wmma_supports(int64_t N, int heads, int head_dim, const void* qkv, const void* dy,
                                      const void* dqkv, bool tiles = false);
cudaError_t attention_backward_wmma(const bf16* qkv, const bf16* dy, bf16* dqkv, int64_t batch, int64_t N, int heads,
                                    int head_dim, float scale, bool tiles, cudaStream_t s);

// The key-tile kernel's phases with raw mma.sync, P and dS in registers (attention_backward_mma.cu;
// the default with bf16 activations since 2026-12-05). Head size 32, bf16, any token count whose
// head fits in 200 KB of shared memory; qkv, dy and y (where given) 16-byte aligned. y and lse (both or
// neither): the forward's output [B, N, heads · 32] and log-sum-exps [B, heads, N]
// (kernels::attention's lse), which stand in for the kernel's first pass over the scores.
bool attention_backward_mma_supports(int64_t N, int heads, int head_dim, const void* qkv, const void* dy,
                                     const void* dqkv, const void* y = nullptr);
cudaError_t attention_backward_mma(const bf16* qkv, const bf16* dy, bf16* dqkv, int64_t batch, int64_t N, int heads,
                                   float scale, cudaStream_t s, const bf16* y = nullptr, const float* lse = nullptr);

// Cross-entropy with soft targets, logits and target [B, K]: loss[b] = −Σ target · log_softmax(logits),
// dlogits = (softmax(logits) − target) · grad_scale (both overwritten).
cudaError_t cross_entropy(const float* logits, const float* target, float grad_scale, float* loss, float* dlogits,
                          int64_t B, int64_t K, cudaStream_t s);

}  // namespace mf::cuda::backward
