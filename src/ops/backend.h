// Backend: one implementation of every op for one device. Layers never call a backend directly;
// they go through the dispatcher (ops/ops.h), which checks shapes, allocates outputs on the
// backend's device, and times/counts each call. Backends may therefore assume valid, contiguous
// inputs and preallocated outputs of the right shape. Outputs never alias inputs unless the op's
// comment says in-place is allowed.
//
// Backends today:
//   "ref" — plain loops with double accumulation: the oracle every other backend is tested against.
//   "cpu" — the fast CPU path: oneDNN for GEMMs and dense convolutions, direct channels-last kernels
//           for depthwise convolution, pooling, norms and elementwise work. Ops it has no fast kernel
//           for run the reference code, on the same device (it derives from the reference backend).
//           Also in bf16 precision (get_backend("cpu", Precision::bf16); docs/bf16.md).
//   "cuda" — NVIDIA GPUs, every op forward and backward in fp32 and bf16 (ops/cuda/, docs/cuda.md);
//           only in builds with CUDA.
// A backend that lacks an op says so in supports(); models check every op they need at load time,
// so a missing kernel fails loudly instead of silently falling back to another device.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "data/batch_mix.h"
#include "ops/op_kind.h"

namespace mf {

// The arithmetic of the matrix-product ops (linear, dense convolution, attention's two products).
// bf16: their operands are rounded to bfloat16 and the products accumulate in fp32; storage, norms
// and their statistics, and every elementwise op stay fp32.
enum class Precision { fp32, bf16 };
const char* precision_name(Precision p);
Precision parse_precision(const std::string& name);  // "fp32" | "bf16"; throws otherwise

// The norm a fused block branch applies to its input: LayerNorm (statistics per token) or GroupNorm
// with one group (statistics per sample), with its per-channel weight and optional bias.
struct BranchNorm {
  enum class Type { layer_norm, group_norm1 } type = Type::layer_norm;
  const Tensor* weight = nullptr;
  const Tensor* bias = nullptr;
  float eps = 1e-5f;
};
// The residual of a block branch: res_scale ⊙ x + layer_scale ⊙ branch, either scale [C] or null (1).
struct BranchScales {
  const Tensor* res_scale = nullptr;
  const Tensor* layer_scale = nullptr;
};

// One parameter's tensors for an AdamW step (Backend::adamw_step), all on the backend's device.
struct AdamWTensors {
  Tensor* weight;
  const Tensor* grad;
  Tensor* exp_avg;
  Tensor* exp_avg_sq;
  bool decay;  // weight decay applies (timm's groups: not to norms, biases, scales)
};
// The step's scalars, as torch.optim.AdamW computes them from lr and the step count: every element
// then runs the same float32 sequence (see Backend::adamw_step).
struct AdamWScalars {
  float decay_factor;  // 1 − lr · weight_decay (for tensors with decay)
  float one_minus_beta1, beta2, one_minus_beta2;
  float bias_correction2_sqrt;  // √(1 − β₂ᵗ)
  float eps;
  float step_size;  // lr / (1 − β₁ᵗ)
};

// The ranks of a data-parallel job (train/distributed.h), as a backend's collectives see them: its
// place, and how rank 0's bytes reach every rank (MPI_Bcast), to agree on a communicator.
struct RankGroup {
  int rank = 0, world = 1;
  std::function<void(void* data, size_t bytes)> broadcast_from_root;
  // The tensors travel as bf16 (train --allreduce bf16): half the bytes, each rank's values rounded
  // once to bf16 before the reduction, the mean rounded to bf16 again, then widened in place.
  bool bf16 = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  virtual bool supports(OpKind op) const = 0;
  // Whether the backward pass of `op` runs on this backend (its *_backward virtual, or the forward
  // ops the backward is made of). The CPU backends have the backward of every op they support; the
  // cuda backend lists its own (docs/cuda.md, "Backward passes").
  virtual bool supports_backward(OpKind op) const { return device() == Device::CPU && supports(op); }
  virtual Precision precision() const { return Precision::fp32; }
  // The dtype of the activations this backend writes (the dispatcher allocates outputs in it): fp32,
  // or bf16 for the cuda backend in bf16 (its activations are stored in bf16; docs/cuda.md).
  virtual DType activation_dtype() const { return DType::f32; }
  // Waits until the device has finished the ops issued so far (a GPU runs them asynchronously);
  // before reading a host clock. No-op on the CPU.
  virtual void synchronize() {}
  // One whole inference pass, pass(x), of the model `owner`. A backend that can record passes (CUDA
  // graphs) replays a recording on later calls with an input of the same shape and dtype; the pass
  // must then depend on nothing but its input's contents, and must not be profiled (a profile waits
  // for the device around each op). By default it just runs.
  virtual Tensor run_pass(const void* owner, const Tensor& x, const std::function<Tensor(const Tensor&)>& pass) {
    (void)owner;
    return pass(x);
  }
  // Drops whatever run_pass recorded for `owner`; call it before the owner goes away, since another
  // object may later live at the same address.
  virtual void release_passes(const void* owner) { (void)owner; }
  // Training's next batch, uploaded while the current step computes: true when this backend wants it
  // (the cuda backend with METAFORMER_CUDA_UPLOAD_AHEAD=1). The trainer then calls
  // reserve_upload(shape) before queuing a step (room for the next batch, ordered before the step's
  // work), and, once the step is queued, takes the next batch, applies its Mixup/CutMix and calls
  // upload_ahead(images); that batch's images must not change afterwards. A batch of another shape
  // than the reservation's is uploaded as usual when an op first reads it.
  virtual bool uploads_ahead() const { return false; }
  virtual void reserve_upload(const Shape& shape) { (void)shape; }
  virtual void upload_ahead(const Tensor& images) { (void)images; }

  // x [..., K], w [N, K] (or [N, K, 1, 1]), b [N] or null -> y [..., N]
  virtual void linear(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y);
  // y = act(x · wᵀ + b); by default linear, then the activation in place (backends fuse it)
  virtual void linear_act(const Tensor& x, const Tensor& w, const Tensor* b, const Activation& act, Tensor& y);
  // The same in a training step, keeping the pre-activation pre = x · wᵀ + b (linear_act_backward reads
  // it); by default linear into pre, then the activation into y. The CUDA backend computes both in one
  // cuBLASLt call where its epilogue applies (bf16 GELU, METAFORMER_CUDA_GELU_EPILOGUE; docs/cuda.md).
  virtual void linear_act_train(const Tensor& x, const Tensor& w, const Tensor* b, const Activation& act, Tensor& pre,
                                Tensor& y);
  // y = skip + ls ⊙ (h · wᵀ + b): a Linear whose output is layer-scaled and added to a residual stream
  // (training's MLP half with a layer scale, op::linear_scaled_residual). By default linear into a
  // temporary, then scaled_residual; where folds_layer_scales() the backend folds ls into the weight
  // and adds skip in the GEMM's epilogue, so the branch output is never written.
  // ls null: skip + h · wᵀ + b (op::linear_residual), fused where fuses_residual_into_linear().
  virtual void linear_scaled_residual(const Tensor& h, const Tensor& w, const Tensor* b, const Tensor* ls,
                                      const Tensor& skip, Tensor& y);
  // Whether the model should run its layer-scaled halves in training as one op each: the MLP half
  // through linear_scaled_residual and linear_act_scaled_backward, PoolFormer's pooling half through
  // pool_branch and pool_branch_backward (which then keep no branch output and write no dy ⊙ ls).
  // False by default, so the CPU backends' numerics stay those of the separate ops.
  virtual bool folds_layer_scales() const { return false; }
  // Whether the model should run a training half without scales (y = x + branch(norm(x)), no drop
  // path) with the branch's last Linear as op::linear_residual, which then writes y and never the
  // branch output. False by default: the CPU backends' numerics stay those of the separate ops (its
  // default runs them anyway).
  virtual bool fuses_residual_into_linear() const { return false; }
  // Whether the model should run a training step's activation → depthwise convolution (ConvFormer's
  // StarReLU → dwconv) as one op, act_depthwise_conv2d and its backward, which then keep only the
  // pre-activation. False by default, so the CPU backends run (and round) exactly the separate ops.
  virtual bool fuses_act_into_depthwise() const { return false; }
  // Whether the model should run a training step's gated CNN (MambaOut) through depthwise_conv2d_slice
  // and gated_conv_backward, which then neither copy the conv channels out of fc1's output nor add
  // their gradient back in a separate pass. False by default (the separate ops' exact numerics).
  virtual bool convolves_channel_slices() const { return false; }
  // y = res_scale ⊙ x + layer_scale ⊙ mlp(norm(x)): the block's second half; by default the norm,
  // mlp and scaled_residual ops one after another
  virtual void mlp_branch(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                          const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales,
                          Tensor& y);
  // Whether mlp_branch may be given y = x (the same storage), for op::mlp_branch_: every element of x
  // is read (by the norm, and as the residual) before its place in y is written. By default not.
  virtual bool mlp_branch_in_place(const BranchScales& scales) const {
    (void)scales;
    return false;
  }
  // y = res_scale ⊙ x + layer_scale ⊙ (pool(n) − n) with n = group_norm1(x): PoolFormer's first half;
  // by default group_norm1, pool_minus_input and scaled_residual
  virtual void pool_branch(const Tensor& x, const BranchNorm& norm, int kernel, const BranchScales& scales,
                           Tensor& y);
  // y = res_scale ⊙ x + layer_scale ⊙ pw2(dw(act(pw1(norm(x))))): ConvFormer's first half (the
  // depthwise convolution keeps the size); by default the norm, linear_act, depthwise_linear and
  // scaled_residual ops (a backend may apply act as the depthwise convolution reads its input)
  virtual void sepconv_branch(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                              const Activation& act, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                              const Tensor& w2, const Tensor* b2, const BranchScales& scales, Tensor& y);
  // y = res_scale ⊙ x + layer_scale ⊙ fc2(act(g) ⊙ [i, dw(c)]) with [g, i, c] = fc1(norm(x)) split at
  // hidden and 2·hidden − conv channels: MambaOut's gated CNN block; by default the norm, linear,
  // channel_slice, depthwise_conv2d, glu_linear and scaled_residual ops
  virtual void gated_cnn_branch(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                                int64_t hidden, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                                const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales,
                                Tensor& y);
  // y = linear(glu(t, c, ...)) with glu's output `width` wide; by default the two ops
  virtual void glu_linear(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset, int64_t width,
                          const Activation& act, const Tensor& w, const Tensor* b, Tensor& y);
  // y = linear(depthwise_conv2d(x)); by default the two ops
  virtual void depthwise_linear(const Tensor& x, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                                const Tensor& w, const Tensor* b, Tensor& y);
  // y = fc2(act(fc1(x))), w1 [H, K], w2 [N, H]; by default linear_act, then linear
  virtual void mlp(const Tensor& x, const Tensor& w1, const Tensor* b1, const Activation& act, const Tensor& w2,
                   const Tensor* b2, Tensor& y);
  // x [B, H, W, Ci], w [Co, Ci, kh, kw], b [Co] or null -> y [B, Ho, Wo, Co]
  virtual void conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y);
  // x [B, H, W, C], w [C, 1, kh, kw], b [C] or null -> y [B, Ho, Wo, C]
  virtual void depthwise_conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y);
  // y = depthwise_conv2d(act(pre)), act applied inside the image only (the padding stays zero); by
  // default activation into a temporary, then depthwise_conv2d
  // y = depthwise_conv2d(t's channels [offset, offset + w.dim(0))); by default channel_slice into a
  // temporary, then depthwise_conv2d
  virtual void depthwise_conv2d_slice(const Tensor& t, int64_t offset, const Tensor& w, const Tensor* b,
                                      const ConvGeometry& g, Tensor& y);
  virtual void act_depthwise_conv2d(const Tensor& pre, const Activation& act, const Tensor& w, const Tensor* b,
                                    const ConvGeometry& g, Tensor& y);
  // x [B, H, W, C] -> y = avg_pool_k(x) - x, stride 1, padding k/2, padded cells not counted
  virtual void pool_minus_input(const Tensor& x, int kernel, Tensor& y);
  // x [..., C], w [C], b [C] or null; in-place allowed
  virtual void layer_norm(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y);
  // x [B, ..., C], statistics over everything but B; affine per channel (last dim); in-place allowed
  virtual void group_norm1(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y);
  // elementwise; in-place allowed
  virtual void activation(const Tensor& x, const Activation& act, Tensor& y);
  // y = x ⊙ res_scale + branch ⊙ layer_scale (scales [C] over the last dim, or null for 1);
  // y may alias x or branch
  virtual void scaled_residual(const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                               const Tensor* layer_scale, Tensor& y);
  // x [B, H, W, C] -> y [B, C]
  virtual void global_avg_pool(const Tensor& x, Tensor& y);
  // qkv [B, N, 3·heads·head_dim] laid out [q | k | v], each head-major -> y [B, N, heads·head_dim]
  virtual void attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y);
  // The same function for a training step, computed the way attention_backward recomputes it; by
  // default attention(). (The CPU backend's inference kernel reads strided views and rounds
  // differently; training keeps the head-major kernel its golden gradients were checked with.)
  virtual void attention_training(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y);
  // The same, also giving the softmax's statistics where this backend's backward reads them: stats
  // [B, heads, N] fp32, each query row's log-sum-exp of its scaled scores (attention_backward_stats).
  // By default attention_training, stats left undefined.
  virtual void attention_training_stats(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y,
                                        Tensor& stats);
  // r [M, N], x [B, N, C], bias [M] or null -> y[b] = r · x[b] + bias (a linear map over tokens)
  virtual void token_mix(const Tensor& r, const Tensor& x, const Tensor* bias, Tensor& y);
  // x [B, C, H, W] -> y [B, H, W, C]
  virtual void nchw_to_nhwc(const Tensor& x, Tensor& y);
  // x [B, ...], s [B] -> y[b] = x[b] · s[b]; in-place allowed
  virtual void sample_scale(const Tensor& x, const Tensor& s, Tensor& y);
  // rows [B, S, S, 3] as the loader packed them, headers [B, crops::kHeaderInts] (int32 bits),
  // table [3, 256] -> y [B, S, S, 3]: the training images (data/device_crops.h)
  virtual void augment_crops(const Tensor& rows, const Tensor& headers, const Tensor& table, Tensor& y);
  // x [B, H, W, C] fp32 -> y [B, H, W, C]: Mixup/CutMix as `plan` says (data/batch_mix.h), computed
  // in fp32 as mix_images_into does, then rounded once to y's dtype
  virtual void mix_images(const Tensor& x, const MixPlan& plan, Tensor& y);
  // logits [B, K], target [B, K] (rows sum to 1) -> loss[b] = -Σ target · log_softmax(logits),
  // dlogits = (softmax(logits) - target) · grad_scale
  virtual void cross_entropy(const Tensor& logits, const Tensor& target, float grad_scale, Tensor& loss,
                             Tensor& dlogits);
  // x [..., C] -> y [..., width] = x[..., offset : offset + width]
  virtual void channel_slice(const Tensor& x, int64_t offset, Tensor& y);
  // t [..., Ct], c [..., cw] or null -> y [..., width]:
  //   y[j] = act(t[gate_offset + j]) · (j < width - cw ? t[value_offset + j] : c[j - (width - cw)])
  // The value is a window of t followed by (optionally) the channels of c: MambaOut's
  // act(g) ⊙ concat(i, conv(c)); gMixer's x1 ⊙ SiLU(x2) and gMLP's u ⊙ v are special cases.
  virtual void glu(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset, const Activation& act,
                   Tensor& y);
  // x [..., C], alpha [C], beta [C] -> y = x ⊙ alpha + beta
  virtual void channel_affine(const Tensor& x, const Tensor& alpha, const Tensor& beta, Tensor& y);
  // x [B, H, W, C] -> y [B, H, W/2+1, 2, C]: orthonormal rfft2 over (H, W); for each frequency bin the
  // C real parts, then the C imaginary parts ("split" layout: a complex MLP is a Linear over 2C). The
  // columns 1 .. ceil(W/2)-1 (whose conjugate twins the half spectrum omits) are then multiplied by
  // mid_scale: 1 for the transform, 2 for the adjoint of irfft2.
  virtual void rfft2(const Tensor& x, float mid_scale, Tensor& y);
  // x [B, H, Wf, 2, C] -> y [B, H, W, C], Wf = W/2+1: the inverse, reading x as the half spectrum of a
  // real signal (as torch.fft.irfft2: the imaginary parts of self-conjugate bins are ignored), after
  // multiplying the same columns by mid_scale: 1 for the transform, 0.5 for the adjoint of rfft2.
  virtual void irfft2(const Tensor& x, float mid_scale, Tensor& y);
  // a [B, ..., 2, C]; b the same shape, or without the batch (broadcast) -> y = a ⊙ b (complex, split
  // layout), or a ⊙ conj(b) with conj_b
  virtual void complex_mul(const Tensor& a, const Tensor& b, bool conj_b, Tensor& y);
  // Forward: x [B, H, W, C] -> y [B, ceil(H/2), ceil(W/2), 4, C], sub-bands LL, (top - bottom),
  // (left - right), HH of each 2×2 block, orthonormal (odd sizes are zero-padded). Inverse: x [B, h,
  // w, 4, C] -> y [B, H, W, C] (H, W from y; the padding is cropped). The 4×4 Haar matrix is
  // symmetric and orthogonal, so each direction's adjoint is the other.
  virtual void haar2d(const Tensor& x, bool inverse, Tensor& y);
  // ---- WaveMix's and iFormer's ops (docs/wavemix-and-iformer.md); ref, cpu and cuda (cuda_family_ops.h)
  // nn.ConvTranspose2d (groups 1): x [B, H, W, Ci], w [Ci, Co, kh, kw] (PyTorch's layout), b [Co] or
  // null -> y [B, Ho, Wo, Co], Ho = (H - 1)·stride - 2·pad + kh: input pixel (i, j) adds w[ci]·x to
  // the window of y at (i·stride - pad, j·stride - pad). The adjoint of conv2d with that geometry.
  virtual void conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y);
  // nn.MaxPool2d: y = the maximum of the window at (i·stride - pad, j·stride - pad), over the pixels
  // inside the map only (PyTorch pads with -inf: the padding never wins).
  virtual void max_pool2d(const Tensor& x, const ConvGeometry& g, Tensor& y);
  // x [B, H, W, C] (H, W multiples of f) -> y [B, H/f, W/f, C]: scale · the sum of each f×f window
  // (scale 1/f²: AvgPool2d(f, stride f); scale 1: the adjoint of upsample_nearest).
  virtual void sum_pool2d(const Tensor& x, int factor, float scale, Tensor& y);
  // x [B, h, w, C] -> y [B, h·f, w·f, C]: y[i, j] = scale · x[i / f, j / f] (nn.Upsample, nearest).
  virtual void upsample_nearest(const Tensor& x, int factor, float scale, Tensor& y);
  // BatchNorm, channels-last: x [..., C], channel = last dimension, statistics over all other
  // positions (B·H·W of them for an image batch).
  // batch_norm_stats: mean [C] and the biased variance [C] of x (what training-mode BatchNorm
  // normalises with; the running update's unbiased correction is the caller's).
  virtual void batch_norm_stats(const Tensor& x, Tensor& mean, Tensor& var);
  // y = (x - mean) / sqrt(var + eps) · w + b, w, b, mean, var [C], b may be null; in-place allowed
  virtual void batch_norm(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& mean, const Tensor& var,
                          float eps, Tensor& y);

  // ---- sequence ops (docs/sequences.md); each has a default that throws "unsupported"
  // ids [B, N] (token ids stored as exact integers in float32, checked by the dispatcher), table
  // [V, D] -> y [B, N, D] = table[ids]
  virtual void embedding(const Tensor& ids, const Tensor& table, Tensor& y);
  // x [B, N, D], pos [T, D] with T >= N -> y[b, n] = x[b, n] + pos[n]; in-place allowed
  virtual void add_positions(const Tensor& x, const Tensor& pos, Tensor& y);
  // As attention(), with token i attending to tokens j <= i only (row-major token order)
  virtual void causal_attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y);
  // x [B, L, C], w [C, 1, K] (nn.Conv1d's depthwise layout), b [C] or null -> y [B, L, C],
  // y[t, c] = b[c] + Σ_k w[c, k] · x[t - K + 1 + k, c] (zero before the start): Mamba's conv1d with
  // padding K - 1 cut to the first L outputs
  virtual void causal_conv1d(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y);
  // Mamba's S6 with its skip and gate, per sequence b and channel d (state n = 0..N-1):
  //   dt[t] = softplus(dt_raw[t, d]), A[n] = -exp(a_log[d, n]),
  //   h[t, n] = exp(dt[t] A[n]) h[t-1, n] + dt[t] B[t, n] u[t, d],   h[-1] = 0,
  //   y[t, d] = (Σ_n h[t, n] C[t, n] + d_skip[d] u[t, d]) · silu(z[t, d])
  // u, dt_raw, z [B, L, D]; a_log [D, N]; bc [B, L, *] holding B at channels [b_offset, b_offset + N)
  // and C right after (x_proj's output, whose first channels are dt's low-rank input); d_skip [D].
  virtual void selective_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                              int64_t b_offset, const Tensor& d_skip, const Tensor& z, Tensor& y);
  // Hydra's quasiseparable mixer, S6's recurrence run once each way per sequence b and channel d:
  //   dt_f[t] = softplus(dt_raw[t, d]), dt_b[t] = softplus(dt_raw[t, D + d]), A[n] = -exp(a_log[d, n]),
  //   f[t] = exp(dt_f[t] A) f[t-1] + dt_f[t] B_f[t] u[t],   f[-1] = 0   (forward)
  //   g[t] = exp(dt_b[t] A) g[t+1] + dt_b[t] B_b[t] u[t],   g[L] = 0    (backward)
  //   y[t, d] = <f[t-1], C_f[t-1]> + <g[t+1], C_b[t+1]> + u[t, d] (dd[t, h] + d_skip[h])
  // (the two scans' outputs shifted by one token away from t: shift(SS) + flip(shift(SS(flip))), and
  // the diagonal, one value per head h = d / (D / H)). u [B, L, D]; dt_raw [B, L, 2D]; a_log [D, N];
  // bc [B, L, *] holding B_f, C_f, B_b, C_b (N channels each) from channel b_offset; dd [B, L, H];
  // d_skip [H].
  virtual void bidirectional_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                  int64_t b_offset, const Tensor& dd, const Tensor& d_skip, Tensor& y);
  // PoNet's pooling and fusion. p [B, L, 6C] holds per token Q, K, V, O, S, Lo (C channels each);
  // per head h of C / heads channels: g = mean_t Q[t], a = softmax_t(<g, K[t]> / sqrt(C / heads)),
  // g' = Σ_t a[t] V[t]; s[t] = max of S over t's segment (tokens [k·seg, (k+1)·seg)); l[t] = max of Lo
  // over tokens t - K/2 .. t + K/2 that exist -> y [B, L, C] = O ⊙ (g' + s) + l
  virtual void ponet_pool(const Tensor& p, int heads, int64_t segment, int local_kernel, Tensor& y);
  // x [..., C], w [C] -> y = x · rsqrt(mean over C of x² + eps) · w (no mean subtracted, no bias)
  virtual void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y);
  // x (rank <= 6) -> y with y.dim(i) = x.dim(perm[i]): a contiguous copy of torch's x.permute(perm)
  virtual void permute(const Tensor& x, const std::vector<int>& perm, Tensor& y);
  // x [B, H, W, C] -> y: channel c, of group g = c / group_width, rolled cyclically by shifts[g]
  // along `axis` (1: H, 2: W), as torch.roll: y[.., i, ..] = x[.., (i - shift) mod n, ..]
  virtual void spatial_shift(const Tensor& x, int axis, int64_t group_width, const std::vector<int>& shifts,
                             Tensor& y);
  // Forward: x [B, H, W, C] -> y [B, Ho, Wo, C], torch's F.interpolate(mode="bicubic",
  // align_corners=False) (cubic convolution, A = -0.75, source taps clamped to the border). Adjoint
  // (`adjoint` set): x [B, Ho, Wo, C] -> y [B, H, W, C], the transpose of that map (its backward).
  virtual void resize_bicubic(const Tensor& x, bool adjoint, Tensor& y);
  // Strip-MLP's strip projection (its proj_h / proj_w, docs/strip-mlp-and-cas-vit.md): x [B, H, W, C],
  // w [G·L, L, 1, 3] (the authors' grouped-conv weight), b [G·L] or null; channel c belongs to group
  // g = c mod G. axis 2 (L = W): a whole row mixed, 3 taps along H (zero outside),
  //   y[b, h, o, c] = b[g·L + o] + Σ_{w, t} w[g·L + o, w, 0, t] · x[b, h + t − 1, w, c];
  // axis 1 (L = H): a whole column mixed, 3 taps along W,
  //   y[b, o, w, c] = b[g·L + o] + Σ_{h, t} w[g·L + o, h, 0, t] · x[b, h, w + t − 1, c].
  virtual void strip_mix(const Tensor& x, const Tensor& w, const Tensor* b, int axis, Tensor& y);
  // branches: K tensors [B, ..., C]; logits [B, C·K] (channel-major: logit k of channel c at c·K + k)
  // -> y = Σ_k softmax_k(logits[b, c·K + ·]) · branches[k] (Strip-MLP's reweight of three branches)
  virtual void split_attention(const std::vector<Tensor>& branches, const Tensor& logits, Tensor& y);
  // x [B, H, W, C], gamma, beta of C values: ConvNeXt-V2's GRN, g[b, c] = ‖x[b, :, :, c]‖₂,
  // n = g / (mean_c g + 1e-6), y = gamma · x · n + beta + x
  virtual void grn(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y);
  // y = x ⊙ f(g), f = sigmoid or the identity; x [B, ..., C], g the same shape, or [B, ..., 1] (one
  // value per position, CAS-ViT's spatial operation), or [B, C] (one per sample and channel, its
  // channel operation)
  virtual void gate(const Tensor& x, const Tensor& g, bool sigmoid, Tensor& y);
  // PatchTSMixer's gated attention: x, logits [A, N, I] -> y = x ⊙ softmax(logits) over N, for each
  // (a, i). Backward (its own, no parameters): dx = dy ⊙ s, dlogits = s ⊙ (g - Σ_n s g), g = dy ⊙ x.
  virtual void softmax_gate(const Tensor& x, const Tensor& logits, Tensor& y);
  virtual void softmax_gate_backward(const Tensor& x, const Tensor& logits, const Tensor& dy, Tensor& dx,
                                     Tensor& dlogits);

  // ---- backward passes ------------------------------------------------------------------------
  // Each takes the forward inputs and dy (the gradient of the loss with respect to the output).
  // Input gradients (dx, ...) are overwritten; parameter gradients (dw, db, ...) are ACCUMULATED,
  // so a trainer zeroes them once per step. Null pointers mean "not needed".
  virtual void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                               Tensor* db);
  // The backward of y = linear(h, w, b) with h = act(pre), through the activation: dpre (overwritten),
  // dw and db += (the linear's), dscale and dbias += (StarReLU's). By default linear_backward into a
  // temporary dh, then activation_backward; the CUDA backend applies the activation's derivative in
  // the dh product's epilogue where linear_act_train fused the activation (the same condition).
  virtual void linear_act_backward(const Tensor& h, const Tensor& pre, const Activation& act, const Tensor& w,
                                   const Tensor& dy, Tensor& dpre, Tensor* dw, Tensor* db, Tensor* dscale,
                                   Tensor* dbias);
  // The backward of y = skip + ls ⊙ linear(h, w, b), h = act(pre), through the activation (skip's
  // gradient is dy itself): dpre (overwritten), dw, db and dls += (the linear's and the layer
  // scale's), dscale and dbias += (StarReLU's). By default the branch output is recomputed,
  // scaled_residual_backward gives dy ⊙ ls and dls, then linear_act_backward.
  virtual void linear_act_scaled_backward(const Tensor& h, const Tensor& pre, const Activation& act, const Tensor& w,
                                          const Tensor* b, const Tensor& ls, const Tensor& dy, Tensor& dpre, Tensor* dw,
                                          Tensor* db, Tensor* dls, Tensor* dscale, Tensor* dbias);
  // The backward of pool_branch with a layer scale and no res scale, y = x + ls ⊙ (pool(n) − n), n =
  // group_norm1(x) (PoolFormer's first half; the norm's statistics recomputed from x): dx
  // (overwritten; it includes the skip's dy), dw, db (the norm's) and dls += . By default the
  // separate ops again: the norm and the mixer's output recomputed, scaled_residual_backward,
  // pool_minus_input_backward, group_norm1_backward_add.
  virtual void pool_branch_backward(const Tensor& x, const BranchNorm& norm, int kernel, const Tensor& ls,
                                    const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db, Tensor* dls);
  virtual void conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy, Tensor* dx,
                               Tensor* dw, Tensor* db);
  virtual void depthwise_conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                                         Tensor* dx, Tensor* dw, Tensor* db);
  // op::gated_conv_backward: dt overwritten, dw and db +=. By default glu_backward, then
  // depthwise_conv2d_backward on a copy of t's slice, its dx added into dt's slice (zero there).
  virtual void gated_conv_backward(const Tensor& t, const Tensor& c, int64_t hidden, int64_t offset,
                                   const Activation& act, const Tensor& w, const ConvGeometry& g, const Tensor& dz,
                                   Tensor& dt, Tensor* dw, Tensor* db);
  // The backward of act_depthwise_conv2d: dpre (overwritten), dw and db += (the convolution's), dscale
  // and dbias += (StarReLU's). By default h = act(pre) again into a temporary, depthwise_conv2d_backward
  // on it (dh into a temporary), then activation_backward.
  virtual void act_depthwise_conv2d_backward(const Tensor& pre, const Activation& act, const Tensor& w,
                                             const ConvGeometry& g, const Tensor& dy, Tensor& dpre, Tensor* dw,
                                             Tensor* db, Tensor* dscale, Tensor* dbias);
  virtual void pool_minus_input_backward(const Tensor& dy, int kernel, Tensor& dx);
  virtual void conv_transpose2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                                         Tensor* dx, Tensor* dw, Tensor* db);
  // dy of each window goes to its maximum (the first in row-major window order at ties, as PyTorch's)
  virtual void max_pool2d_backward(const Tensor& x, const ConvGeometry& g, const Tensor& dy, Tensor& dx);
  virtual void layer_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                   Tensor* dw, Tensor* db);
  virtual void group_norm1_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                    Tensor* dw, Tensor* db);
  // The same with a block's skip gradient added, for y = x ⊙ res_scale + branch(norm(x)): dx =
  // residual ⊙ res_scale + the norm's dx (res_scale null: 1), and d_res_scale (if given) += Σ over the
  // rows of x ⊙ residual; x is the norm's input and the skip's alike. So dx is written once instead
  // of being read back by an add, and the scale's gradient needs no pass of its own. The default runs
  // scaled_residual_backward (with a res scale), the norm's backward and scaled_residual into dx: the
  // bits of those ops in turn. A backend that fuses them (cuda) rounds dx once, not twice.
  virtual void layer_norm_backward_add(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                                       const Tensor& residual, const Tensor* res_scale, Tensor& dx, Tensor* dw,
                                       Tensor* db, Tensor* d_res_scale);
  virtual void group_norm1_backward_add(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                                        const Tensor& residual, const Tensor* res_scale, Tensor& dx, Tensor* dw,
                                        Tensor* db, Tensor* d_res_scale);
  // dscale, dbias (StarReLU only, one element each, on the backend's device or the host): accumulated
  virtual void activation_backward(const Tensor& x, const Activation& act, const Tensor& dy, Tensor& dx,
                                   Tensor* dscale, Tensor* dbias);
  virtual void scaled_residual_backward(const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                                        const Tensor* layer_scale, const Tensor& dy, Tensor& dx, Tensor& dbranch,
                                        Tensor* d_res_scale, Tensor* d_layer_scale);
  virtual void global_avg_pool_backward(const Tensor& dy, Tensor& dx);
  virtual void attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                  Tensor& dqkv);
  // The same given the forward's output y and its stats (attention_training_stats, defined): P from
  // the log-sum-exp and D = Σ dO ⊙ y per row, as FlashAttention-2's backward takes them, instead of a
  // pass over the scores for them. By default attention_backward.
  virtual void attention_backward_stats(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                        const Tensor& y, const Tensor& stats, Tensor& dqkv);
  virtual void token_mix_backward(const Tensor& r, const Tensor& x, const Tensor& dy, Tensor* dx, Tensor* dr,
                                  Tensor* dbias);
  // dx [..., C] += dy scattered to channels [offset, offset + width)
  virtual void channel_slice_backward(const Tensor& dy, int64_t offset, Tensor& dx);
  // dt [..., Ct] is overwritten (zero outside the gate and value windows); dc overwritten
  virtual void glu_backward(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                            const Activation& act, const Tensor& dy, Tensor& dt, Tensor* dc);
  virtual void channel_affine_backward(const Tensor& x, const Tensor& alpha, const Tensor& dy, Tensor& dx,
                                       Tensor* dalpha, Tensor* dbeta);
  // da = dy ⊙ conj(b) (overwritten); db += dy ⊙ conj(a), summed over the batch when b is broadcast
  virtual void complex_mul_backward(const Tensor& a, const Tensor& b, const Tensor& dy, Tensor* da, Tensor* db);
  // dtable [V, D] += the rows of dy scattered to their ids
  virtual void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable);
  // dpos [T, D]: rows n < N += Σ_b dy[b, n] (the input's gradient is dy itself)
  virtual void add_positions_backward(const Tensor& dy, Tensor& dpos);
  virtual void causal_attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                         Tensor& dqkv);
  virtual void causal_conv1d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                                      Tensor* db);
  // du, ddt_raw, dz [B, L, D] overwritten; dbc [B, L, *] overwritten (B's and C's gradients, zero in
  // the other channels); da_log [D, N] and dd_skip [D] accumulated. The states are recomputed from
  // checkpoints every `chunk` steps, never all kept at once.
  virtual void selective_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                       int64_t b_offset, const Tensor& d_skip, const Tensor& z, const Tensor& dy,
                                       int64_t chunk, Tensor& du, Tensor& ddt_raw, Tensor& dbc, Tensor& dz,
                                       Tensor* da_log, Tensor* dd_skip);
  // du, ddt_raw [B, L, 2D], ddd [B, L, H] overwritten; dbc overwritten (zero outside B_f .. C_b);
  // da_log and dd_skip accumulated. States recomputed from checkpoints every `chunk` steps.
  virtual void bidirectional_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log,
                                           const Tensor& bc, int64_t b_offset, const Tensor& dd, const Tensor& d_skip,
                                           const Tensor& dy, int64_t chunk, Tensor& du, Tensor& ddt_raw, Tensor& dbc,
                                           Tensor& ddd, Tensor* da_log, Tensor* dd_skip);
  // dp [B, L, 6C] overwritten (a maximum's gradient goes to the token that attained it).
  virtual void ponet_pool_backward(const Tensor& p, int heads, int64_t segment, int local_kernel, const Tensor& dy,
                                   Tensor& dp);
  virtual void rms_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw);
  // mean, var: the statistics the forward normalised with. batch_stats: they were x's own (training
  // mode), so dx includes their dependence on x; otherwise (eval, running statistics) they are
  // constants and dx = dy · w / sqrt(var + eps).
  virtual void batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& var, float eps,
                                   bool batch_stats, const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db);
  virtual void strip_mix_backward(const Tensor& x, const Tensor& w, int axis, const Tensor& dy, Tensor* dx, Tensor* dw,
                                  Tensor* db);
  // dbranches (K tensors) and dlogits overwritten
  virtual void split_attention_backward(const std::vector<Tensor>& branches, const Tensor& logits, const Tensor& dy,
                                        std::vector<Tensor>& dbranches, Tensor& dlogits);
  virtual void grn_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy, Tensor& dx, Tensor* dgamma,
                            Tensor* dbeta);
  // dx and dg (g's shape, summed over the positions or channels it is broadcast to) overwritten
  virtual void gate_backward(const Tensor& x, const Tensor& g, bool sigmoid, const Tensor& dy, Tensor& dx, Tensor& dg);

  // ---- the optimizer's ops: lists of fp32 tensors on this backend's device. The defaults are host
  // loops (the ref and cpu backends); the cuda backend runs each list in one or two launches.
  // For every element, in float32 and in this order (torch's single-tensor AdamW):
  //   w ·= decay_factor (tensors with decay); m += (g − m) · (1 − β₁); v = v · β₂ + g · g · (1 − β₂);
  //   w −= step_size · (m / (√v / √(1 − β₂ᵗ) + eps))
  virtual void adamw_step(const std::vector<AdamWTensors>& tensors, const AdamWScalars& s);
  // Σ over the tensors of Σ x², accumulated in double in a fixed order (the same result every run).
  virtual double sum_of_squares(const std::vector<const Tensor*>& tensors);
  // x = float(double(x) · factor) for every element of every tensor (gradient clipping).
  virtual void scale_(const std::vector<Tensor*>& tensors, double factor);
  // avg = avg · decay + w · (1 − decay) elementwise, in float32 (decay and 1 − decay given as floats);
  // where copy[k], avg[k] = w[k] instead (an integer counter).
  virtual void ema_update(const std::vector<Tensor*>& avg, const std::vector<const Tensor*>& w,
                          const std::vector<bool>& copy, float decay, float one_minus_decay);

  // ---- collectives: each fp32 tensor on this backend's device replaced by its mean over the ranks of
  // `group`. The host's is MPI's (train/distributed.cpp, not here); the cuda backend's is NCCL's, in a
  // build that has NCCL. The default refuses.
  virtual bool supports_allreduce() const { return false; }
  virtual void allreduce_mean(const std::vector<Tensor*>& tensors, const RankGroup& group);
  // The same mean of one tensor (a range of the flat gradient buffer) started now and finished by
  // allreduce_wait(): work queued after the start may run while the ranks exchange (the cuda backend:
  // NCCL on a stream of its own, after the work queued so far), and work queued after the wait sees
  // every started mean. The tensor must not be written in between. The default is allreduce_mean at
  // once and a wait that does nothing.
  virtual void allreduce_mean_start(Tensor& t, const RankGroup& group);
  virtual void allreduce_wait() {}

 protected:
  [[noreturn]] void unsupported(OpKind op) const;
  // n = the branch's norm of x (layer_norm or group_norm1), for the fused branches' compositions.
  void branch_norm(const Tensor& x, const BranchNorm& norm, Tensor& n);
  // layer_norm_backward_add's default: the skip gradient residual ⊙ res_scale, by scaled_residual_backward.
  Tensor scaled_skip(const Tensor& x, const Tensor& residual, const Tensor* res_scale, Tensor* d_res_scale);
  // layer_norm_backward_add's and group_norm1_backward_add's default: those ops in turn.
  void norm_backward_then_add(bool group, const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                              const Tensor& residual, const Tensor* res_scale, Tensor& dx, Tensor* dw, Tensor* db,
                              Tensor* d_res_scale);
};

// "ref", "cpu" or "cuda"; throws mf::Error listing the available names otherwise, or when the backend
// has no implementation in `precision` (only "cpu" has bf16), or for "cuda" in a build without CUDA
// or on a machine without a GPU.
Backend& get_backend(const std::string& name, Precision precision = Precision::fp32);
std::string available_backends();
// --device: "cpu", "cuda" or "cuda:N". Chooses the GPU the cuda backend will use; throws when it
// does not exist, when the build has no CUDA, or when the device does not match the backend.
void select_device(const std::string& spec, const std::string& backend);
// True when this build contains the CUDA backend (whether or not a GPU is present).
bool built_with_cuda();
// How the cuda backend's fp32 matrix products multiply: "fp32" (exact: the default, parity), "tf32" or
// "bf16" (tensor cores, operands rounded inside cuBLASLt, fp32 accumulation and storage; docs/cuda.md).
// Throws for another name, or for tf32/bf16 in a build without CUDA.
void set_gpu_matmul(const std::string& mode);
// CUDA GPUs this process can use (0 without CUDA in the build, a driver or a GPU).
int gpu_count();
// The most bytes the GPU memory pool has held for tensors since the last reset (0 without CUDA or
// before the cuda backend's first use); what bench reports as peak GPU memory.
size_t gpu_peak_bytes();
// The blocks the pool held at that peak, grouped by size, with METAFORMER_CUDA_PEAK_BLOCKS=1 (a
// diagnostic: it keeps a table of every live block); otherwise empty.
std::string gpu_peak_blocks();
void reset_gpu_peak();

}  // namespace mf
