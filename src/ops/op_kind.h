// The op vocabulary shared by every backend. A model's layers call ops only through the dispatcher
// (ops/ops.h); each backend implements the same ops under the same names (ops/backend.h).
#pragma once

#include <cstdint>

namespace mf {

enum class OpKind : uint8_t {
  Linear,           // x · Wᵀ + b over the last dimension (1×1 convolutions in channels-last too)
  Conv2d,           // dense convolution, channels-last (stem, downsampling)
  DepthwiseConv2d,  // per-channel k×k convolution, channels-last
  PoolMinusInput,   // PoolFormer's mixer: avg_pool(x) - x
  LayerNorm,        // over the last dimension (channels)
  GroupNorm1,       // one group: statistics over all non-batch dimensions
  Activation,       // elementwise GELU / StarReLU / SquaredReLU / ReLU / SiLU
  ScaledResidual,   // y = x ⊙ res_scale + branch ⊙ layer_scale
  GlobalAvgPool,    // mean over H, W
  Attention,        // multi-head softmax(q kᵀ · scale) v from a packed qkv tensor
  TokenMix,         // y[b] = R · x[b] over tokens (RandFormer)
  NchwToNhwc,       // layout conversion at the model boundary
  SampleScale,      // y[b] = x[b] · s[b]: drop path's per-sample keep mask
  CrossEntropy,     // softmax cross-entropy against soft targets (label smoothing, mixup)
  ChannelSlice,     // a contiguous copy of a window of the last dimension (MambaOut's split, gMLP's gate)
  Glu,              // gated product act(gate) ⊙ value of channel windows (MambaOut, gMixer, gMLP)
  ChannelAffine,    // y = x ⊙ alpha + beta per channel (ResMLP's Affine "norm")
  Rfft2,            // orthonormal real 2-D FFT over H, W, channels-last, split re/im layout
  Irfft2,           // its inverse (Hermitian half spectrum -> real)
  ComplexMul,       // elementwise complex product in the split layout (spectral filters)
  Haar2d,           // one-level orthonormal 2-D Haar wavelet transform and its inverse
  Embedding,        // token ids -> rows of a table (sequence models' stem)
  AddPositions,     // x[b, n] + pos[n]: a position table added to every sequence of the batch
  CausalAttention,  // attention in which token i sees tokens j <= i only
  CausalConv1d,     // per-channel 1-D convolution over the sequence that reads only the past (Mamba)
  SelectiveScan,    // Mamba's S6 recurrence with input-dependent dt, B, C, the D skip and the SiLU gate
  BidirectionalScan,  // Hydra's quasiseparable mixer: two shifted selective scans (forward, backward) + diagonal
  PonetPool,        // PoNet's multi-granularity pooling (global attention-pooling, segment and local max) and fusion
  RmsNorm,          // x · rsqrt(mean(x²) + eps) · w over the last dimension (Mamba's, T5's)
  BatchNorm,        // per-channel statistics over every position of the batch (BatchNorm2d, channels-last)
  Permute,          // a contiguous copy with the axes reordered (RaftMLP's raft layouts)
  SpatialShift,     // channel groups rolled cyclically along H or W (MS-MLP's shift)
  ResizeBicubic,    // torch's bicubic interpolation (align_corners=False) and its adjoint (RaftMLP)
  StripMix,         // Strip-MLP's strip projection: a whole row (or column) mixed per channel group, 3 taps across
  SplitAttention,   // softmax over K branches' per-channel logits, then their weighted sum (Strip-MLP's reweight)
  Grn,              // global response normalisation (ConvNeXt-V2's GRN; Strip-MLP's channel mixing)
  Gate,             // x ⊙ f(g), g full, per position or per sample and channel; f sigmoid or identity (CAS-ViT)
  ConvTranspose2d,  // nn.ConvTranspose2d, channels-last: the adjoint of conv2d (WaveMix's upsampling)
  MaxPool2d,        // nn.MaxPool2d (padding never wins), channels-last (iFormer's high-frequency branch)
  AvgPool2d,        // non-overlapping f×f mean pooling (iFormer's low-frequency branch)
  UpsampleNearest,  // f× nearest-neighbour upsampling, the adjoint of f×f sum pooling (iFormer)
  SoftmaxGate,      // x ⊙ softmax(logits) over the middle axis of [A, N, I] (PatchTSMixer's gated attention)
  AugmentCrops,     // training crops packed by the loader -> finished images (data/device_crops.h)
  MixImages,        // Mixup/CutMix of a batch with itself reversed (data/batch_mix.h)
  // The optimizer's ops (train/optimizer.h, train/ema.h): each runs over a list of tensors in one call
  AdamWStep,        // AdamW's update of weights and moments, decoupled weight decay (torch.optim.AdamW)
  GradNorm,         // Σ g² over a list of gradients (deterministic order), and their in-place scaling (clipping)
  EmaUpdate,        // avg = decay · avg + (1 − decay) · w over a list of tensors (timm's ModelEmaV2)
  kCount
};

const char* op_name(OpKind op);

// Coarse families for `metaformer bench --profile`.
enum class OpFamily : uint8_t { Gemm, Conv, Depthwise, Norm, Pooling, Attention, Spectral, Elementwise, Layout, kCount };
OpFamily op_family(OpKind op);
const char* op_family_name(OpFamily f);

enum class ActKind : uint8_t { Identity, GELU, StarReLU, SquaredReLU, ReLU, SiLU, SoftShrink };
const char* act_name(ActKind a);

// An activation with its (scalar) parameters: StarReLU is scale · relu(x)² + bias.
struct Activation {
  ActKind kind = ActKind::Identity;
  float scale = 1.f;
  float bias = 0.f;
  float threshold = 0.f;  // SoftShrink's λ: x - λ above λ, x + λ below -λ, 0 between
  // StarReLU's scale and bias where a GPU run keeps them (one float each on the device): the CUDA
  // kernels read them there, so a training step copies nothing to the host for them. Null on the
  // host, where `scale` and `bias` hold the values.
  const float* scale_on_device = nullptr;
  const float* bias_on_device = nullptr;
};

// Geometry of a 2-D convolution, PyTorch semantics (symmetric zero padding).
struct ConvGeometry {
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int64_t out_h(int64_t in_h) const { return (in_h + 2 * pad_h - kernel_h) / stride_h + 1; }
  int64_t out_w(int64_t in_w) const { return (in_w + 2 * pad_w - kernel_w) / stride_w + 1; }
};

}  // namespace mf
