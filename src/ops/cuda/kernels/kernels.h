// Hand-written CUDA kernels of the CUDA backend: everything that is not a GEMM (cuBLASLt) or an FFT
// (cuFFT). Plain C++ host functions taking raw device pointers, sizes and a stream, so that code
// compiled by the host compiler can call them; this header needs only cuda_runtime_api.h.
//
// Conventions (all functions):
// - Activations are channels-last (NHWC; tokens [B, N, C]) and stored as float or bf16 (the
//   overloads below); arithmetic, accumulation and norm statistics are always fp32. Per-channel
//   parameters (norm weights and biases, layer and residual scales, convolution weights) are float.
// - Each launcher returns cudaGetLastError() after its launches (cudaSuccess when there was nothing
//   to do), and cudaErrorInvalidValue for arguments it does not handle (said per function).
// - Outputs never alias inputs unless the comment says so. Nothing allocates: ops that need scratch
//   space take a workspace whose size a *_workspace_bytes function gives.
// - The semantics are those of the reference backend (src/ops/ref/*.cpp), which selftest.cu checks.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace mf::cuda::kernels {

// bfloat16 storage, layout-identical to CUDA's __nv_bfloat16 (the kernels reinterpret it), so that
// callers need not include cuda_bf16.h.
struct bf16 {
  uint16_t bits;
};

// The activations of the engine (same order as mf::ActKind): StarReLU is scale · relu(x)² + bias,
// SoftShrink's threshold λ; GELU is the exact erf form (PyTorch's default).
enum class ActKind : int { Identity = 0, GELU, StarReLU, SquaredReLU, ReLU, SiLU, SoftShrink };
struct Act {
  ActKind kind = ActKind::Identity;
  float scale = 1.f;
  float bias = 0.f;
  float threshold = 0.f;
  // StarReLU's scale and bias read on the device (a GPU run's parameters) instead of scale, bias.
  const float* scale_p = nullptr;
  const float* bias_p = nullptr;
};

// ---- elementwise (elementwise.cu) --------------------------------------------------------------
// y = a + b, y = a ⊙ b over n elements; y may alias a or b.
cudaError_t add(const float* a, const float* b, float* y, int64_t n, cudaStream_t s);
cudaError_t add(const bf16* a, const bf16* b, bf16* y, int64_t n, cudaStream_t s);
cudaError_t mul(const float* a, const float* b, float* y, int64_t n, cudaStream_t s);
cudaError_t mul(const bf16* a, const bf16* b, bf16* y, int64_t n, cudaStream_t s);
// y = act(x) over n elements; in place allowed.
cudaError_t activation(const float* x, float* y, int64_t n, Act act, cudaStream_t s);
cudaError_t activation(const bf16* x, bf16* y, int64_t n, Act act, cudaStream_t s);
// y[r, c] = act(x[r, c] · scale[c] + bias[c]) over rows × C; scale and/or bias may be null (1, 0).
// Covers the bias add, bias + GELU, the per-channel layer scale and ResMLP's Affine
// (channel_affine: act = Identity). In place allowed.
cudaError_t channel_affine_act(const float* x, const float* scale, const float* bias, float* y, int64_t rows,
                               int64_t C, Act act, cudaStream_t s);
cudaError_t channel_affine_act(const bf16* x, const float* scale, const float* bias, bf16* y, int64_t rows,
                               int64_t C, Act act, cudaStream_t s);
// y = x ⊙ res_scale + branch ⊙ layer_scale (scales [C] over the last dim, null for 1): the
// residual with layer scale. y may alias x or branch.
cudaError_t scaled_residual(const float* x, const float* res_scale, const float* branch, const float* layer_scale,
                            float* y, int64_t rows, int64_t C, cudaStream_t s);
cudaError_t scaled_residual(const bf16* x, const float* res_scale, const bf16* branch, const float* layer_scale,
                            bf16* y, int64_t rows, int64_t C, cudaStream_t s);
// y[b, i] = x[b, i] · s[b] over B samples of `per` elements (s on the device); in place allowed.
cudaError_t sample_scale(const float* x, const float* scale, float* y, int64_t B, int64_t per, cudaStream_t s);
cudaError_t sample_scale(const bf16* x, const float* scale, bf16* y, int64_t B, int64_t per, cudaStream_t s);
// y [rows, width] = x [rows, C][:, offset : offset + width]
cudaError_t channel_slice(const float* x, float* y, int64_t rows, int64_t C, int64_t offset, int64_t width,
                          cudaStream_t s);
cudaError_t channel_slice(const bf16* x, bf16* y, int64_t rows, int64_t C, int64_t offset, int64_t width,
                          cudaStream_t s);
// The gated product (Backend::glu): t [rows, Ct], c [rows, cw] or null (cw = 0), y [rows, width]:
// y[j] = act(t[gate_offset + j]) · (j < width - cw ? t[value_offset + j] : c[j - (width - cw)]).
cudaError_t glu(const float* t, int64_t Ct, const float* c, int64_t cw, int64_t gate_offset, int64_t value_offset,
                float* y, int64_t rows, int64_t width, Act act, cudaStream_t s);
cudaError_t glu(const bf16* t, int64_t Ct, const bf16* c, int64_t cw, int64_t gate_offset, int64_t value_offset,
                bf16* y, int64_t rows, int64_t width, Act act, cudaStream_t s);
// Storage conversions (round to nearest even), n elements.
cudaError_t cast(const float* x, bf16* y, int64_t n, cudaStream_t s);
cudaError_t cast(const bf16* x, float* y, int64_t n, cudaStream_t s);

// ---- norms (norms.cu) --------------------------------------------------------------------------
// LayerNorm over the last dim C of `rows` rows (biased variance, as torch): y = (x − mean) · rstd ·
// w + b, b may be null. In place allowed when X and Y are the same type. The float → bf16 form lets
// an fp32 residual stream feed a bf16 GEMM.
cudaError_t layer_norm(const float* x, const float* w, const float* b, float eps, float* y, int64_t rows, int64_t C,
                       cudaStream_t s);
cudaError_t layer_norm(const bf16* x, const float* w, const float* b, float eps, bf16* y, int64_t rows, int64_t C,
                       cudaStream_t s);
cudaError_t layer_norm(const float* x, const float* w, const float* b, float eps, bf16* y, int64_t rows, int64_t C,
                       cudaStream_t s);
// The block boundary fused (llm.c's fused_residual_forward): r = x ⊙ res_scale + branch ⊙
// layer_scale is written to `residual` (which may alias x or branch), and y = LayerNorm(r) (as
// stored: rounded to bf16 in bf16 storage) to y.
cudaError_t residual_layer_norm(const float* x, const float* res_scale, const float* branch, const float* layer_scale,
                                float* residual, const float* w, const float* b, float eps, float* y, int64_t rows,
                                int64_t C, cudaStream_t s);
cudaError_t residual_layer_norm(const bf16* x, const float* res_scale, const bf16* branch, const float* layer_scale,
                                bf16* residual, const float* w, const float* b, float eps, bf16* y, int64_t rows,
                                int64_t C, cudaStream_t s);
// layer_norm of x, and skip = x ⊙ res_scale (same layout and type as x) from the same read: the
// scaled skip term of a block's branch with a res scale, for its last GEMM's residual epilogue.
cudaError_t layer_norm_scaled_skip(const float* x, const float* res_scale, float* skip, const float* w, const float* b,
                                   float eps, float* y, int64_t rows, int64_t C, cudaStream_t s);
cudaError_t layer_norm_scaled_skip(const bf16* x, const float* res_scale, bf16* skip, const float* w, const float* b,
                                   float eps, bf16* y, int64_t rows, int64_t C, cudaStream_t s);
// GroupNorm with one group (PoolFormer's): statistics over all `per` = H·W·C elements of each of B
// samples, affine per channel (channel = index % C). Two launches plus a tiny merge; deterministic
// (no atomics). The workspace holds per-chunk partial statistics and the final [B, 2] (mean, rstd).
size_t group_norm1_workspace_bytes(int64_t B, int64_t per);
cudaError_t group_norm1(const float* x, const float* w, const float* b, float eps, float* y, int64_t B, int64_t per,
                        int64_t C, void* workspace, cudaStream_t s);
cudaError_t group_norm1(const bf16* x, const float* w, const float* b, float eps, bf16* y, int64_t B, int64_t per,
                        int64_t C, void* workspace, cudaStream_t s);
cudaError_t group_norm1(const float* x, const float* w, const float* b, float eps, bf16* y, int64_t B, int64_t per,
                        int64_t C, void* workspace, cudaStream_t s);
// group_norm1 of an x whose partial statistics the kernel that wrote it also wrote (pool_branch's
// y_partials, group_norm1_partials_bytes(B, per) bytes): the merge and the normalisation only, x read
// once instead of twice. The same statistics, bit for bit, as group_norm1's own pass over x.
size_t group_norm1_partials_bytes(int64_t B, int64_t per);
cudaError_t group_norm1_from_partials(const float* x, const float* partials, const float* w, const float* b, float eps,
                                      float* y, int64_t B, int64_t per, int64_t C, void* workspace, cudaStream_t s);
cudaError_t group_norm1_from_partials(const bf16* x, const float* partials, const float* w, const float* b, float eps,
                                      bf16* y, int64_t B, int64_t per, int64_t C, void* workspace, cudaStream_t s);
// Only the statistics: mean_rstd [B, 2] (float, device) from x; workspace as above (its [B, 2] part
// is not used: mean_rstd may point anywhere).
cudaError_t group_norm1_stats(const float* x, float* mean_rstd, int64_t B, int64_t per, float eps, void* workspace,
                              cudaStream_t s);
cudaError_t group_norm1_stats(const bf16* x, float* mean_rstd, int64_t B, int64_t per, float eps, void* workspace,
                              cudaStream_t s);

// ---- convolutions and pooling (conv.cu) --------------------------------------------------------
// The depthwise weights [C, 1, kh, kw] (PyTorch) -> [kh, kw, C] (what depthwise_conv2d reads).
cudaError_t depthwise_weight_to_hwc(const float* w_chw, float* w_hwc, int64_t C, int kh, int kw, cudaStream_t s);
// Depthwise k×k convolution, channels-last, PyTorch geometry (zero padding ph, pw; strides sh, sw):
// x [B, H, W, C] whose pixels are x_stride elements apart (≥ C: lets it read a channel window of a
// wider tensor, MambaOut's conv channels; x points at the window's first channel), y [B, Ho, Wo, C]
// with pixels y_stride apart, w_hwc [kh, kw, C] float, bias [C] or null.
// y = post_act(conv(pre_act(x)) + bias): pre_act is applied to each input value inside the image
// (the padding stays zero, as when the activation is a separate op before the convolution);
// ConvFormer's StarReLU → dwconv and a conv → GELU fuse this way.
cudaError_t depthwise_conv2d(const float* x, int64_t x_stride, const float* w_hwc, const float* bias, float* y,
                             int64_t y_stride, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo,
                             int kh, int kw, int sh, int sw, int ph, int pw, Act pre_act, Act post_act,
                             cudaStream_t s);
cudaError_t depthwise_conv2d(const bf16* x, int64_t x_stride, const float* w_hwc, const float* bias, bf16* y,
                             int64_t y_stride, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo,
                             int kh, int kw, int sh, int sw, int ph, int pw, Act pre_act, Act post_act,
                             cudaStream_t s);
// For kernel benchmarks (bench/cuda_dev): the depthwise forward's variant, by one of
// METAFORMER_CUDA_DW's names, for the calls that follow in this process; null or "" goes back to the
// environment's choice. False (and no change) for a name that is no variant.
bool set_depthwise_variant(const char* name);
// PoolFormer's mixer: y = avg_pool_k(x) − x, stride 1, padding k/2, count_include_pad=False.
cudaError_t pool_minus_input(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, int kernel,
                             cudaStream_t s);
cudaError_t pool_minus_input(const bf16* x, bf16* y, int64_t B, int64_t H, int64_t W, int64_t C, int kernel,
                             cudaStream_t s);
// PoolFormer's whole token-mixer half (Backend::pool_branch): y = res_scale ⊙ x + layer_scale ⊙
// (pool(n) − n), n = group_norm1(x; w, b, eps). pool(n) − n = w · rstd · (pool(x) − x), so the norm's
// bias and mean cancel and are never applied (b is accepted for the signature's sake). Statistics
// first (workspace: group_norm1_workspace_bytes(B, H·W·C)), then one pass. y_partials (optional,
// group_norm1_partials_bytes(B, H·W·C)): y's own GroupNorm partial statistics, written as y is (or,
// where the vector kernel does not apply, by a pass over y after it), for the MLP half's norm of y
// (group_norm1_from_partials).
cudaError_t pool_branch(const float* x, const float* w, const float* b, float eps, int kernel, const float* res_scale,
                        const float* layer_scale, float* y, int64_t B, int64_t H, int64_t W, int64_t C,
                        void* workspace, cudaStream_t s, float* y_partials = nullptr);
cudaError_t pool_branch(const bf16* x, const float* w, const float* b, float eps, int kernel, const float* res_scale,
                        const float* layer_scale, bf16* y, int64_t B, int64_t H, int64_t W, int64_t C,
                        void* workspace, cudaStream_t s, float* y_partials = nullptr);
// x [B, HW, C] -> y [B, C]: the mean over the HW positions.
cudaError_t global_avg_pool(const float* x, float* y, int64_t B, int64_t HW, int64_t C, cudaStream_t s);
cudaError_t global_avg_pool(const bf16* x, bf16* y, int64_t B, int64_t HW, int64_t C, cudaStream_t s);
cudaError_t global_avg_pool(const bf16* x, float* y, int64_t B, int64_t HW, int64_t C, cudaStream_t s);
// Dense convolutions as GEMMs: x [B, H, W, C] -> cols [B·Ho·Wo, kh·kw·C] in column order (ky, kx, c),
// zero outside the image; the GEMM then multiplies by the weights in the matching order, which
// conv_weight_to_gemm makes: w [Co, Ci, kh, kw] -> [Co, kh, kw, Ci] (= [Co, K] row-major).
// Non-overlapping patches (stride = kernel, no padding: isotropic models' patch embedding) are the
// same call.
cudaError_t im2col_nhwc(const float* x, float* cols, int64_t B, int64_t H, int64_t W, int64_t C, int kh, int kw,
                        int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s);
cudaError_t im2col_nhwc(const bf16* x, bf16* cols, int64_t B, int64_t H, int64_t W, int64_t C, int kh, int kw, int sh,
                        int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s);
// The same with rows ldk ≥ kh·kw·C elements apart and the columns past K zero: a GEMM operand whose
// leading dimension is a multiple of 8 elements (the stem's K = 147 would force cuBLASLt's
// unaligned kernels). The writes of a warp are contiguous, 16 bytes a thread where C allows.
// The float form (ldk = K where no padding is wanted) is the fp32 path's and the weight gradient's.
cudaError_t im2col_nhwc_padded(const bf16* x, bf16* cols, int64_t ldk, int64_t B, int64_t H, int64_t W, int64_t C,
                               int kh, int kw, int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s);
cudaError_t im2col_nhwc_padded(const float* x, float* cols, int64_t ldk, int64_t B, int64_t H, int64_t W, int64_t C,
                               int kh, int kw, int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s);
// The stem's form: the same columns straight from the NCHW float input images x [B, C, H, W]
// (no separate layout pass), stored as float or bf16.
cudaError_t im2col_nchw(const float* x, float* cols, int64_t B, int64_t C, int64_t H, int64_t W, int kh, int kw,
                        int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s);
cudaError_t im2col_nchw(const float* x, bf16* cols, int64_t B, int64_t C, int64_t H, int64_t W, int kh, int kw,
                        int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s);
// Rows ldk ≥ K = kh·kw·Ci elements apart, zero past K (the padded columns of im2col_nhwc_padded).
cudaError_t conv_weight_to_gemm(const float* w, float* wg, int64_t ldk, int64_t Co, int64_t Ci, int kh, int kw,
                                cudaStream_t s);
cudaError_t conv_weight_to_gemm(const float* w, bf16* wg, int64_t ldk, int64_t Co, int64_t Ci, int kh, int kw,
                                cudaStream_t s);

// ---- layout (layout.cu) ------------------------------------------------------------------------
// x [B, C, H, W] -> y [B, H, W, C] and back (tiled through shared memory). The float → bf16 form
// converts the input images on the way in.
cudaError_t nchw_to_nhwc(const float* x, float* y, int64_t B, int64_t C, int64_t H, int64_t W, cudaStream_t s);
cudaError_t nchw_to_nhwc(const bf16* x, bf16* y, int64_t B, int64_t C, int64_t H, int64_t W, cudaStream_t s);
cudaError_t nchw_to_nhwc(const float* x, bf16* y, int64_t B, int64_t C, int64_t H, int64_t W, cudaStream_t s);
cudaError_t nhwc_to_nchw(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s);
cudaError_t nhwc_to_nchw(const bf16* x, bf16* y, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s);

// ---- attention (attention.cu) ------------------------------------------------------------------
// Multi-head softmax(q kᵀ · scale) v, flash-style (online softmax over key tiles in shared memory;
// no N×N matrix in global memory), fp32 softmax and accumulation. qkv [B, N, 3·heads·head_dim]
// laid out [q | k | v], each head-major -> y [B, N, heads·head_dim]. head_dim 1..128
// (cudaErrorInvalidValue above). bf16 with head_dim 32 runs on the tensor cores (mma.sync), with
// the probabilities rounded to bf16 before the product with v (as FlashAttention does).
cudaError_t attention(const float* qkv, float* y, int64_t B, int64_t N, int heads, int head_dim, float scale,
                      cudaStream_t s);
// lse (null, or [B, heads, N]): each query row's log-sum-exp of its scaled scores, where the
// tensor-core kernel runs (attention_writes_lse; cudaErrorInvalidValue elsewhere), for the backward.
cudaError_t attention(const bf16* qkv, bf16* y, int64_t B, int64_t N, int heads, int head_dim, float scale,
                      cudaStream_t s, float* lse = nullptr);
bool attention_writes_lse(const bf16* qkv, const bf16* y, int head_dim);

// ---- spectral helpers (spectral.cu) ------------------------------------------------------------
// Complex product in the split layout (Backend::complex_mul): a [rows, 2, C] (C real parts, then C
// imaginary parts), b [brows, 2, C] with rows % brows == 0 (row r uses b's row r % brows: a filter
// broadcast over the batch) -> y = a ⊙ b, or a ⊙ conj(b) with conj_b. y may alias a.
cudaError_t complex_mul(const float* a, const float* b, float* y, int64_t rows, int64_t brows, int64_t C, bool conj_b,
                        cudaStream_t s);
cudaError_t complex_mul(const bf16* a, const bf16* b, bf16* y, int64_t rows, int64_t brows, int64_t C, bool conj_b,
                        cudaStream_t s);
// One-level orthonormal 2-D Haar transform (Backend::haar2d): x [B, H, W, C] -> bands [B, ceil(H/2),
// ceil(W/2), 4, C] (LL, top − bottom, left − right, HH; odd sizes zero-padded), and the inverse
// bands -> x (the padding cropped).
cudaError_t haar2d(const float* x, float* bands, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s);
cudaError_t haar2d(const bf16* x, bf16* bands, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s);
cudaError_t haar2d_inverse(const float* bands, float* x, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s);
cudaError_t haar2d_inverse(const bf16* bands, bf16* x, int64_t B, int64_t H, int64_t W, int64_t C, cudaStream_t s);

// Backend::augment_crops (data/device_crops.h): rows [B, S, S, 3] fp32 slots as the loader packed
// them, headers [B, crops::kHeaderInts] int32, table [3][256] -> y [B, S, S, 3]. tmp holds the
// horizontal pass: B * max_rows * S * 3 bytes, max_rows the largest kRowEnd - kRowBegin. B ≤ 65535.
// Backend::mix_images (data/batch_mix.h): x [B, H, W, C] fp32 -> y; mode 0 copy, 1 blend
// (fma(x_b, keep, x_partner · take)), 2 the partner's pixels inside box = {y0, y1, x0, x1}.
cudaError_t mix_images(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, int mode, float keep,
                       float take, const int64_t box[4], cudaStream_t s);
cudaError_t mix_images(const float* x, bf16* y, int64_t B, int64_t H, int64_t W, int64_t C, int mode, float keep,
                       float take, const int64_t box[4], cudaStream_t s);
cudaError_t augment_crops(const float* rows, const int32_t* headers, int64_t B, int S, int max_rows, uint8_t* tmp,
                          const float* table, float* y, cudaStream_t s);
cudaError_t augment_crops(const float* rows, const int32_t* headers, int64_t B, int S, int max_rows, uint8_t* tmp,
                          const float* table, bf16* y, cudaStream_t s);

}  // namespace mf::cuda::kernels
