// The op dispatcher: the only way layers run ops. Each function checks its arguments' shapes
// (once, for every backend), allocates the output on the backend's device, and, when a profile is
// attached, records the op's wall time, call count and multiply-accumulates by op kind.
#pragma once

#include <array>
#include <cstdint>
#include <utility>

#include "core/tensor.h"
#include "ops/backend.h"

namespace mf {

struct OpProfile {
  std::array<double, static_cast<size_t>(OpKind::kCount)> seconds{};
  std::array<int64_t, static_cast<size_t>(OpKind::kCount)> calls{};
  std::array<int64_t, static_cast<size_t>(OpKind::kCount)> macs{};
  // The host's time per op only: no waiting for the device around each op, so a GPU run shows where
  // the host spends a step queuing work (and any op that makes it wait). Off: each op's device time.
  bool host_only = false;
  void clear() {
    const bool h = host_only;
    *this = OpProfile{};
    host_only = h;
  }
  int64_t total_macs() const;
  double total_seconds() const;
};

// What an op runs on: a backend, and optionally a profile to record into.
struct Exec {
  Backend* backend = nullptr;
  OpProfile* profile = nullptr;
};

namespace op {

Tensor linear(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b);
// act(x · wᵀ + b) as one op: backends that can fuse the activation into the GEMM's output (the CPU
// backend, through oneDNN post-ops) never write the pre-activation to memory. Inference only: the
// backward pass needs the pre-activation, which this does not keep.
Tensor linear_act(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, const Activation& act);
// act(x · wᵀ + b) in a training step: returns {y, pre} with pre = x · wᵀ + b, which
// linear_act_backward reads (Backend::linear_act_train: the CUDA backend fuses a bf16 GELU into the
// GEMM and writes both from it). With the identity, pre is y.
std::pair<Tensor, Tensor> linear_act_train(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b,
                                           const Activation& act);
// skip + ls ⊙ (h · wᵀ + b) (ls [N]): a layer-scaled Linear added to the residual stream, as training's
// MLP half with a layer scale (PoolFormer) runs it where the backend folds layer scales
// (Backend::folds_layer_scales): the CUDA backend folds ls into the weight and adds skip in the GEMM's
// epilogue, so the branch output is never written. Its backward is linear_act_scaled_backward.
Tensor linear_scaled_residual(const Exec& e, const Tensor& h, const Tensor& w, const Tensor* b, const Tensor& ls,
                              const Tensor& skip);
// skip + (h · wᵀ + b): a Linear added to the residual stream, as training's halves without scales run
// their last Linear where the backend fuses it (Backend::fuses_residual_into_linear: the CUDA backend
// adds skip in the GEMM's epilogue, so the branch output is never written nor read back). Its
// backward is linear_backward's: the sum's dy is the Linear's.
Tensor linear_residual(const Exec& e, const Tensor& h, const Tensor& w, const Tensor* b, const Tensor& skip);
// linear(depthwise_conv2d(x)): ConvFormer's dwconv → pwconv2 as one op. The CPU backend runs it in
// blocks of image rows whose depthwise output stays in cache on its way into the GEMM. Inference only.
Tensor depthwise_linear(const Exec& e, const Tensor& x, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                        const Tensor& w, const Tensor* b);
// linear(glu(t, c, ...), w, b): MambaOut's gated product straight into fc2, as one op; the CPU
// backend runs it in blocks of rows so the gated product stays in cache. Inference only.
Tensor glu_linear(const Exec& e, const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                  int64_t width, const Activation& act, const Tensor& w, const Tensor* b);
// res_scale ⊙ x + layer_scale ⊙ mlp(norm(x)): the MetaFormer block's second half as one op. The CPU
// backend normalises each block of rows into the cache-resident buffer fc1 reads from (GroupNorm:
// with the sample's statistics, computed first) and adds the residual to each block of fc2's output
// while it is still in cache. Inference only.
Tensor mlp_branch(const Exec& e, const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                  const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales);
// The same for a caller that hands x over: written over x where x is its storage's only tensor and
// the backend allows it (Backend::mlp_branch_in_place), so the branch needs no output stream of its
// own; otherwise mlp_branch. The same values either way.
Tensor mlp_branch_(const Exec& e, Tensor x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                   const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales);
// fc2(act(fc1(x))), the MetaFormer MLP, as one op: the CPU backend runs it in blocks of rows so the
// hidden activations (4× the width) stay in cache instead of going through memory. Inference only.
Tensor mlp(const Exec& e, const Tensor& x, const Tensor& w1, const Tensor* b1, const Activation& act, const Tensor& w2,
           const Tensor* b2);
Tensor conv2d(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g);
Tensor depthwise_conv2d(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g);
// depthwise_conv2d(act(pre), w, b, g) in a training step (ConvFormer's StarReLU → dwconv, where
// Backend::fuses_act_into_depthwise): the padding stays zero, act applying only to the image's values,
// as a separate activation op before the convolution. The CUDA backend applies act as the depthwise
// kernel stages its input, so act(pre) is never written. Its backward is act_depthwise_conv2d_backward.
Tensor act_depthwise_conv2d(const Exec& e, const Tensor& pre, const Activation& act, const Tensor& w, const Tensor* b,
                            const ConvGeometry& g);
// depthwise_conv2d of channels [offset, offset + C) of t's (C = w.dim(0)), as MambaOut's gated CNN
// convolves the last channels of fc1's output, in a training step where the backend convolves
// channel slices (Backend::convolves_channel_slices: the CUDA backend reads them where they lie, so
// no copy of the slice is written). Its backward is gated_conv_backward.
Tensor depthwise_conv2d_slice(const Exec& e, const Tensor& t, int64_t offset, const Tensor& w, const Tensor* b,
                              const ConvGeometry& g);
Tensor pool_minus_input(const Exec& e, const Tensor& x, int kernel);
// res_scale ⊙ x + layer_scale ⊙ (pool(n) − n), n = group_norm1(x): PoolFormer's norm, mixer and
// residual as one op (norm.type must be group_norm1). In training too where the backend folds layer
// scales (Backend::folds_layer_scales), with a layer scale and no res scale: pool_branch_backward.
Tensor pool_branch(const Exec& e, const Tensor& x, const BranchNorm& norm, int kernel, const BranchScales& scales);
// res_scale ⊙ x + layer_scale ⊙ fc2(act(g) ⊙ [i, dw(c)]), [g, i, c] = fc1(norm(x)) split at hidden and
// 2·hidden − conv channels (dw_w [conv, 1, k, k], size-preserving): MambaOut's whole block as one op.
// The CUDA backend convolves c where fc1 wrote it (no copy) and adds the residual in fc2's epilogue.
// Inference only.
Tensor gated_cnn_branch(const Exec& e, const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                        int64_t hidden, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                        const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales);
// res_scale ⊙ x + layer_scale ⊙ pw2(dw(act(pw1(norm(x))))): ConvFormer's norm, SepConv mixer and
// residual as one op (the depthwise convolution must keep the size: stride 1, same padding). The
// CUDA backend applies act while the depthwise kernel stages its input and adds the residual in
// pw2's GEMM epilogue. Inference only.
Tensor sepconv_branch(const Exec& e, const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                      const Activation& act, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                      const Tensor& w2, const Tensor* b2, const BranchScales& scales);
Tensor layer_norm(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, float eps);
Tensor group_norm1(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, float eps);
Tensor activation(const Exec& e, const Tensor& x, const Activation& act);
void activation_(const Exec& e, Tensor& x, const Activation& act);  // in place
// Returns x ⊙ res_scale + branch ⊙ layer_scale, written over `branch` (which the caller gives up).
Tensor scaled_residual(const Exec& e, const Tensor& x, const Tensor* res_scale, Tensor branch,
                       const Tensor* layer_scale);
// The same into a new tensor, keeping both inputs (training keeps them for backward).
Tensor scaled_residual_new(const Exec& e, const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                           const Tensor* layer_scale);
Tensor global_avg_pool(const Exec& e, const Tensor& x);
// `training`: the forward pass that attention_backward pairs with (see Backend::attention_training).
// stats (training only, may be null): the softmax's statistics where the backend keeps them
// (Backend::attention_training_stats; undefined elsewhere), for attention_backward.
Tensor attention(const Exec& e, const Tensor& qkv, int heads, int head_dim, float scale, bool training = false,
                 Tensor* stats = nullptr);
// y[b] = r · x[b] (+ bias[m] on output token m): r [M, N], x [B, N, C] -> [B, M, C]
Tensor token_mix(const Exec& e, const Tensor& r, const Tensor& x, const Tensor* bias = nullptr);
// A contiguous copy of channels [offset, offset + width) of the last dimension.
Tensor channel_slice(const Exec& e, const Tensor& x, int64_t offset, int64_t width);
// y[..., j] = act(t[gate_offset + j]) · value[j], value = t[value_offset ...] followed by c's channels
// (see Backend::glu); y has `width` channels.
Tensor glu(const Exec& e, const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset, int64_t width,
           const Activation& act);
// y = x ⊙ alpha + beta over the last dimension (ResMLP's Affine).
Tensor channel_affine(const Exec& e, const Tensor& x, const Tensor& alpha, const Tensor& beta);
// Orthonormal real 2-D FFT over H, W: x [B, H, W, C] -> [B, H, W/2+1, 2, C] (split re/im; see Backend).
Tensor rfft2(const Exec& e, const Tensor& x);
// Its inverse: [B, H, W/2+1, 2, C] -> [B, H, width, C].
Tensor irfft2(const Exec& e, const Tensor& x, int64_t width);
// Elementwise complex product in the split layout; b may lack the batch dimension (broadcast).
Tensor complex_mul(const Exec& e, const Tensor& a, const Tensor& b);
// One-level orthonormal Haar DWT: [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 4, C], and its inverse.
Tensor haar2d(const Exec& e, const Tensor& x);
Tensor haar2d_inverse(const Exec& e, const Tensor& bands, int64_t height, int64_t width);
// nn.ConvTranspose2d (groups 1): x [B, H, W, Ci], w [Ci, Co, kh, kw], b [Co] or null -> [B, Ho, Wo, Co],
// Ho = (H - 1)·stride - 2·pad + kh (WaveMix's 4×4 stride-2 upsampling). Its backward: dx is conv2d
// of dy with the same geometry and weight; dw and db are accumulated.
Tensor conv_transpose2d(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g);
Tensor conv_transpose2d_backward(const Exec& e, const Tensor& x, const Tensor& w, const ConvGeometry& g,
                                 const Tensor& dy, bool need_dx, Tensor* dw, Tensor* db);
// nn.MaxPool2d(kernel, stride, padding), channels-last (iFormer's 3×3 stride-1 high-frequency pooling),
// and its backward (each window's gradient to its first maximum).
Tensor max_pool2d(const Exec& e, const Tensor& x, const ConvGeometry& g);
Tensor max_pool2d_backward(const Exec& e, const Tensor& x, const ConvGeometry& g, const Tensor& dy);
// nn.AvgPool2d(f, stride f) on maps whose sides are multiples of f, and nn.Upsample(scale_factor=f)
// (nearest); each one's backward is the other, scaled (iFormer's low-frequency branch).
Tensor avg_pool2d(const Exec& e, const Tensor& x, int factor);
Tensor avg_pool2d_backward(const Exec& e, const Tensor& dy, int factor);
Tensor upsample_nearest(const Exec& e, const Tensor& x, int factor);
Tensor upsample_nearest_backward(const Exec& e, const Tensor& dy, int factor);
Tensor nchw_to_nhwc(const Exec& e, const Tensor& x);
// BatchNorm over channels-last x [..., C] (statistics over every position but the channel):
// batch_norm is eval mode, normalising with the given (running) statistics mean, var [C];
// batch_norm_train is training mode, normalising with x's own mean and biased variance, which it
// returns in batch_mean, batch_var (for the running update and for backward). PyTorch's rule: a
// training batch needs more than one value per channel.
Tensor batch_norm(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& mean,
                  const Tensor& var, float eps);
Tensor batch_norm_train(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, float eps,
                        Tensor& batch_mean, Tensor& batch_var);
// A contiguous copy of x.permute(perm) (torch's meaning: output axis i is input axis perm[i]). Its
// backward is the same op with inverse_permutation(perm).
Tensor permute(const Exec& e, const Tensor& x, const std::vector<int>& perm);
std::vector<int> inverse_permutation(const std::vector<int>& perm);
// x [B, H, W, C]: each group of group_width channels (the last may be narrower, as torch.chunk makes
// it) rolled cyclically by its own shift along axis 1 (H) or 2 (W), as torch.roll. Its backward is
// the same op with the shifts negated (spatial_shift_backward).
Tensor spatial_shift(const Exec& e, const Tensor& x, int axis, int64_t group_width, const std::vector<int>& shifts);
Tensor spatial_shift_backward(const Exec& e, const Tensor& dy, int axis, int64_t group_width,
                              const std::vector<int>& shifts);
// torch's F.interpolate(x, (height, width), mode="bicubic", align_corners=False) on [B, H, W, C], and
// its backward: dy [B, height, width, C] -> dx [B, H, W, C].
Tensor resize_bicubic(const Exec& e, const Tensor& x, int64_t height, int64_t width);
Tensor resize_bicubic_backward(const Exec& e, const Tensor& dy, int64_t height, int64_t width);
// Strip-MLP's strip projection (Backend::strip_mix): x [B, H, W, C], w [G·L, L, 1, 3], b [G·L] or
// null; axis 2 mixes whole rows (L = W), axis 1 whole columns (L = H); channel c uses group c mod G.
Tensor strip_mix(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, int axis);
// K same-shaped branches and logits [B, C·K] -> Σ_k softmax_k(logits) · branches[k] (Backend::split_attention).
Tensor split_attention(const Exec& e, const std::vector<Tensor>& branches, const Tensor& logits);
// ConvNeXt-V2's global response normalisation over x [B, H, W, C]; gamma, beta of C values.
Tensor grn(const Exec& e, const Tensor& x, const Tensor& gamma, const Tensor& beta);
// x ⊙ f(g) (Backend::gate): g of x's shape, [B, ..., 1] or [B, C]; f sigmoid or the identity.
Tensor gate(const Exec& e, const Tensor& x, const Tensor& g, bool sigmoid);
// y[b] = x[b] · s[b] (drop path); also its own backward.
Tensor sample_scale(const Exec& e, const Tensor& x, const Tensor& s);
// Training images from the rows a loader packed (LoaderOptions::packed_crops, data/device_crops.h),
// in the backend's activation dtype (fp32 with keep_fp32, for mix_images to round once): exactly the
// values the loader's own transform gives.
Tensor augment_crops(const Exec& e, const Tensor& rows, const Tensor& headers, const Tensor& table,
                     bool keep_fp32 = false);
// Mixup/CutMix of fp32 images [B, H, W, C] (host or device) as `plan` says, in the backend's
// activation dtype: the host's mix_images_into (data/batch_mix.h), bit for bit, rounded once.
Tensor mix_images(const Exec& e, const Tensor& images, const MixPlan& plan);
// Mean over the batch of the cross-entropy of softmax(logits) against soft targets (each row sums
// to 1); writes d(mean loss)/d(logits) into dlogits.
double cross_entropy(const Exec& e, const Tensor& logits, const Tensor& target, Tensor& dlogits);
// The same, leaving the B per-sample losses on the backend's device (their mean is the loss): a
// trainer reads them later (Tensor::to_host_later) instead of waiting for the GPU mid-step.
Tensor cross_entropy_losses(const Exec& e, const Tensor& logits, const Tensor& target, Tensor& dlogits);
// The mean of per-sample losses on the host, summed in order in double (what cross_entropy returns).
double mean_loss(const Tensor& host_losses);
// y = x ⊙ softmax(logits) over the middle axis of [A, N, I] (PatchTSMixer's gated attention: over the
// patches with I = channels, or over the channels with I = 1); the backward returns {dx, dlogits}.
Tensor softmax_gate(const Exec& e, const Tensor& x, const Tensor& logits);
std::pair<Tensor, Tensor> softmax_gate_backward(const Exec& e, const Tensor& x, const Tensor& logits, const Tensor& dy);

// ---- sequence ops (see Backend; docs/sequences.md)
// ids [B, N] (float32 holding integers) -> [B, N, D]. Every id is checked first: one that is not an
// integer in [0, V) is an error naming it and its position.
Tensor embedding(const Exec& e, const Tensor& ids, const Tensor& table);
// x [B, N, D] + pos[:N] for every b; pos [T, D] must have T >= N.
Tensor add_positions(const Exec& e, const Tensor& x, const Tensor& pos);
Tensor causal_attention(const Exec& e, const Tensor& qkv, int heads, int head_dim, float scale);
// x [B, L, C], w [C, 1, K], b [C] or null -> [B, L, C]
Tensor causal_conv1d(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b);
Tensor selective_scan(const Exec& e, const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                      int64_t b_offset, const Tensor& d_skip, const Tensor& z);
// Hydra's quasiseparable mixer without its gate (see Backend::bidirectional_scan): u [B, L, D],
// dt_raw [B, L, 2D], bc holding B_f, C_f, B_b, C_b from b_offset, dd [B, L, H], d_skip [H].
Tensor bidirectional_scan(const Exec& e, const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                          int64_t b_offset, const Tensor& dd, const Tensor& d_skip);
// PoNet's pooling and fusion: p [B, L, 6C] (Q, K, V, O, S, Lo) -> [B, L, C] (see Backend::ponet_pool).
Tensor ponet_pool(const Exec& e, const Tensor& p, int heads, int64_t segment, int local_kernel);
Tensor rms_norm(const Exec& e, const Tensor& x, const Tensor& w, float eps);

// ---- backward passes (see Backend): return the input gradient; parameter gradients (dw, db, ...)
// are accumulated into the given tensors when not null.
Tensor linear_backward(const Exec& e, const Tensor& x, const Tensor& w, const Tensor& dy, bool need_dx, Tensor* dw,
                       Tensor* db);
// The backward of linear(h, w, b) with h = act(pre), through the activation, as linear_act_train made
// pre and h: returns dpre; dw, db (the linear's) and dscale, dbias (StarReLU's) accumulated.
Tensor linear_act_backward(const Exec& e, const Tensor& h, const Tensor& pre, const Activation& act, const Tensor& w,
                           const Tensor& dy, Tensor* dw, Tensor* db, Tensor* dscale = nullptr,
                           Tensor* dbias = nullptr);
Tensor conv2d_backward(const Exec& e, const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                       bool need_dx, Tensor* dw, Tensor* db);
Tensor depthwise_conv2d_backward(const Exec& e, const Tensor& x, const Tensor& w, const ConvGeometry& g,
                                 const Tensor& dy, Tensor* dw, Tensor* db);
// The gated CNN's backward from z = glu(t, c, 0, hidden, act) (width hidden) with c =
// depthwise_conv2d_slice(t, offset, w, b, g) (size-preserving; offset + c's channels = 2 · hidden =
// t's): returns dt, the gate's and values' gradients and, at [offset, offset + C), the convolution's
// input gradient; dw and db accumulated. The same values as glu_backward (dc; zero in dt's slice),
// depthwise_conv2d_backward on the slice and channel_slice_backward_ into dt, which is the default;
// the CUDA backend writes the convolution's input gradient into dt's slice and reads t's slice where
// it lies.
Tensor gated_conv_backward(const Exec& e, const Tensor& t, const Tensor& c, int64_t hidden, int64_t offset,
                           const Activation& act, const Tensor& w, const ConvGeometry& g, const Tensor& dz, Tensor* dw,
                           Tensor* db);
// The backward of act_depthwise_conv2d: returns dpre; dw, db (the convolution's) and dscale, dbias
// (StarReLU's; null for the other activations) accumulated.
Tensor act_depthwise_conv2d_backward(const Exec& e, const Tensor& pre, const Activation& act, const Tensor& w,
                                     const ConvGeometry& g, const Tensor& dy, Tensor* dw, Tensor* db,
                                     Tensor* dscale = nullptr, Tensor* dbias = nullptr);
Tensor pool_minus_input_backward(const Exec& e, const Tensor& dy, int kernel);
// With `residual`: dx = residual ⊙ res_scale (1 without) + the norm's dx, d_res_scale += Σ x ⊙ residual
// (a block's skip gradient; Backend::layer_norm_backward_add).
Tensor layer_norm_backward(const Exec& e, const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor* dw,
                           Tensor* db, const Tensor* residual = nullptr, const Tensor* res_scale = nullptr,
                           Tensor* d_res_scale = nullptr);
Tensor group_norm1_backward(const Exec& e, const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor* dw,
                            Tensor* db, const Tensor* residual = nullptr, const Tensor* res_scale = nullptr,
                            Tensor* d_res_scale = nullptr);
Tensor activation_backward(const Exec& e, const Tensor& x, const Activation& act, const Tensor& dy,
                           Tensor* dscale = nullptr, Tensor* dbias = nullptr);
// Returns {dx, dbranch}. y = x ⊙ res_scale + branch ⊙ layer_scale: x is read only for d_res_scale and
// branch only for d_layer_scale, so a caller without a layer-scale gradient need not keep the branch
// output (an undefined `branch`; MetaFormerBlock then does not save it). need_dx false: dx is not
// written and comes back undefined (a block whose skip has no res scale uses dy itself).
// The backward of y = skip + ls ⊙ linear(act(pre), w, b) (linear_scaled_residual after
// linear_act_train) through the activation: returns dpre; dw, db, dls (the layer scale's), dscale and
// dbias (StarReLU's) accumulated. skip's gradient is dy itself.
Tensor linear_act_scaled_backward(const Exec& e, const Tensor& h, const Tensor& pre, const Activation& act,
                                  const Tensor& w, const Tensor* b, const Tensor& ls, const Tensor& dy, Tensor* dw,
                                  Tensor* db, Tensor* dls, Tensor* dscale = nullptr, Tensor* dbias = nullptr);
// The backward of pool_branch(x, norm, kernel, {null, &ls}): returns dx (the skip's dy included);
// dw, db (the norm's weight and bias) and dls accumulated. The norm's statistics come from x again.
Tensor pool_branch_backward(const Exec& e, const Tensor& x, const BranchNorm& norm, int kernel, const Tensor& ls,
                            const Tensor& dy, Tensor* dw, Tensor* db, Tensor* dls);
std::pair<Tensor, Tensor> scaled_residual_backward(const Exec& e, const Tensor& x, const Tensor* res_scale,
                                                   const Tensor& branch, const Tensor* layer_scale, const Tensor& dy,
                                                   Tensor* d_res_scale, Tensor* d_layer_scale, bool need_dx = true);
Tensor global_avg_pool_backward(const Exec& e, const Tensor& dy, const Shape& x_shape);
// y, stats: the training forward's output and statistics (op::attention's stats), where it gave them
// (defined): the backend's backward then reads them (Backend::attention_backward_stats).
Tensor attention_backward(const Exec& e, const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                          const Tensor* y = nullptr, const Tensor* stats = nullptr);
Tensor token_mix_backward(const Exec& e, const Tensor& r, const Tensor& x, const Tensor& dy, Tensor* dr,
                          Tensor* dbias = nullptr);
// dx += dy placed at channels [offset, offset + width) (dx is accumulated, not overwritten).
void channel_slice_backward_(const Exec& e, const Tensor& dy, int64_t offset, Tensor& dx);
// A zero tensor where the backend keeps activations (its device, its activation dtype): what
// channel_slice_backward_ and the other accumulating ops add into. A host tensor there would be
// uploaded by a GPU backend on every pass, and copied back after each addition.
Tensor zeros(const Exec& e, const Shape& s);
// torch.cat((a, b), dim=-1) of two activations with the same leading dimensions.
Tensor concat_channels(const Exec& e, const Tensor& a, const Tensor& b);
// Returns dt (zero outside the gate and value windows); dc (same shape as c) is overwritten.
Tensor glu_backward(const Exec& e, const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                    const Activation& act, const Tensor& dy, Tensor* dc);
Tensor channel_affine_backward(const Exec& e, const Tensor& x, const Tensor& alpha, const Tensor& dy, Tensor* dalpha,
                               Tensor* dbeta);
// The adjoints (PyTorch's rules): rfft2's is irfft2 after halving the columns that stand for
// conjugate pairs, irfft2's is rfft2 with those columns doubled (docs/spectral-mixers.md).
Tensor rfft2_backward(const Exec& e, const Tensor& dy, int64_t width);
Tensor irfft2_backward(const Exec& e, const Tensor& dy);
// Returns da = dy ⊙ conj(b); accumulates db += dy ⊙ conj(a) (summed over a broadcast batch).
Tensor complex_mul_backward(const Exec& e, const Tensor& a, const Tensor& b, const Tensor& dy, Tensor* db);
// mean, var: the statistics the forward used; batch_stats: they were the batch's own (training).
Tensor batch_norm_backward(const Exec& e, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& var,
                           float eps, bool batch_stats, const Tensor& dy, Tensor* dw, Tensor* db);

// Returns dx when need_dx (else an undefined tensor); dw, db accumulated.
Tensor strip_mix_backward(const Exec& e, const Tensor& x, const Tensor& w, int axis, const Tensor& dy, bool need_dx,
                          Tensor* dw, Tensor* db);
// Returns the branches' gradients; dlogits overwritten (allocated here).
std::vector<Tensor> split_attention_backward(const Exec& e, const std::vector<Tensor>& branches, const Tensor& logits,
                                             const Tensor& dy, Tensor& dlogits);
Tensor grn_backward(const Exec& e, const Tensor& x, const Tensor& gamma, const Tensor& dy, Tensor* dgamma,
                    Tensor* dbeta);
// Returns {dx, dg}.
std::pair<Tensor, Tensor> gate_backward(const Exec& e, const Tensor& x, const Tensor& g, bool sigmoid, const Tensor& dy);

void embedding_backward_(const Exec& e, const Tensor& ids, const Tensor& dy, Tensor& dtable);
Tensor rms_norm_backward(const Exec& e, const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor* dw);
void add_positions_backward_(const Exec& e, const Tensor& dy, Tensor& dpos);
Tensor causal_attention_backward(const Exec& e, const Tensor& qkv, int heads, int head_dim, float scale,
                                 const Tensor& dy);
Tensor causal_conv1d_backward(const Exec& e, const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dw,
                              Tensor* db);
struct SelectiveScanGrads {
  Tensor du, ddt_raw, dbc, dz;  // dbc: zero outside B's and C's channels
};
// `chunk`: steps between the kept states (the backward pass recomputes the states in between).
SelectiveScanGrads selective_scan_backward(const Exec& e, const Tensor& u, const Tensor& dt_raw, const Tensor& a_log,
                                           const Tensor& bc, int64_t b_offset, const Tensor& d_skip, const Tensor& z,
                                           const Tensor& dy, int64_t chunk, Tensor* da_log, Tensor* dd_skip);
struct BidirectionalScanGrads {
  Tensor du, ddt_raw, dbc, ddd;  // dbc: zero outside the two directions' B and C
};
BidirectionalScanGrads bidirectional_scan_backward(const Exec& e, const Tensor& u, const Tensor& dt_raw,
                                                   const Tensor& a_log, const Tensor& bc, int64_t b_offset,
                                                   const Tensor& dd, const Tensor& d_skip, const Tensor& dy,
                                                   int64_t chunk, Tensor* da_log, Tensor* dd_skip);
Tensor ponet_pool_backward(const Exec& e, const Tensor& p, int heads, int64_t segment, int local_kernel,
                           const Tensor& dy);

// ---- the optimizer's ops (see Backend; train/optimizer.h, train/ema.h): every tensor on the
// backend's device, fp32. Each bumps the version of what it updates (cached layouts are stale).
void adamw_step(const Exec& e, const std::vector<AdamWTensors>& tensors, const AdamWScalars& s);
double sum_of_squares(const Exec& e, const std::vector<const Tensor*>& tensors);
void scale_(const Exec& e, const std::vector<Tensor*>& tensors, double factor);
// avg = decay · avg + (1 − decay) · w, or a copy of w where copy[k].
void ema_update(const Exec& e, const std::vector<Tensor*>& avg, const std::vector<const Tensor*>& w,
                const std::vector<bool>& copy, double decay);

}  // namespace op
}  // namespace mf
