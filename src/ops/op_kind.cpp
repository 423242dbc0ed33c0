#include "ops/op_kind.h"

namespace mf {

const char* op_name(OpKind op) {
  switch (op) {
    case OpKind::Linear: return "linear";
    case OpKind::Conv2d: return "conv2d";
    case OpKind::DepthwiseConv2d: return "depthwise_conv2d";
    case OpKind::PoolMinusInput: return "pool_minus_input";
    case OpKind::LayerNorm: return "layer_norm";
    case OpKind::GroupNorm1: return "group_norm1";
    case OpKind::Activation: return "activation";
    case OpKind::ScaledResidual: return "scaled_residual";
    case OpKind::GlobalAvgPool: return "global_avg_pool";
    case OpKind::Attention: return "attention";
    case OpKind::TokenMix: return "token_mix";
    case OpKind::NchwToNhwc: return "nchw_to_nhwc";
    case OpKind::SampleScale: return "sample_scale";
    case OpKind::CrossEntropy: return "cross_entropy";
    case OpKind::ChannelSlice: return "channel_slice";
    case OpKind::Glu: return "glu";
    case OpKind::ChannelAffine: return "channel_affine";
    case OpKind::Rfft2: return "rfft2";
    case OpKind::Irfft2: return "irfft2";
    case OpKind::ComplexMul: return "complex_mul";
    case OpKind::Haar2d: return "haar2d";
    case OpKind::Embedding: return "embedding";
    case OpKind::AddPositions: return "add_positions";
    case OpKind::CausalAttention: return "causal_attention";
    case OpKind::CausalConv1d: return "causal_conv1d";
    case OpKind::SelectiveScan: return "selective_scan";
    case OpKind::BidirectionalScan: return "bidirectional_scan";
    case OpKind::PonetPool: return "ponet_pool";
    case OpKind::RmsNorm: return "rms_norm";
    case OpKind::BatchNorm: return "batch_norm";
    case OpKind::Permute: return "permute";
    case OpKind::SpatialShift: return "spatial_shift";
    case OpKind::ResizeBicubic: return "resize_bicubic";
    case OpKind::StripMix: return "strip_mix";
    case OpKind::SplitAttention: return "split_attention";
    case OpKind::Grn: return "grn";
    case OpKind::Gate: return "gate";
    case OpKind::ConvTranspose2d: return "conv_transpose2d";
    case OpKind::MaxPool2d: return "max_pool2d";
    case OpKind::AvgPool2d: return "avg_pool2d";
    case OpKind::UpsampleNearest: return "upsample_nearest";
    case OpKind::SoftmaxGate: return "softmax_gate";
    case OpKind::AugmentCrops: return "augment_crops";
    case OpKind::MixImages: return "mix_images";
    case OpKind::AdamWStep: return "adamw_step";
    case OpKind::GradNorm: return "grad_norm";
    case OpKind::EmaUpdate: return "ema_update";
    case OpKind::kCount: break;
  }
  return "?";
}

OpFamily op_family(OpKind op) {
  switch (op) {
    case OpKind::Linear: return OpFamily::Gemm;
    case OpKind::TokenMix: return OpFamily::Gemm;
    case OpKind::Conv2d: return OpFamily::Conv;
    case OpKind::DepthwiseConv2d: return OpFamily::Depthwise;
    case OpKind::PoolMinusInput: return OpFamily::Pooling;
    case OpKind::GlobalAvgPool: return OpFamily::Pooling;
    case OpKind::LayerNorm: return OpFamily::Norm;
    case OpKind::GroupNorm1: return OpFamily::Norm;
    case OpKind::Attention: return OpFamily::Attention;
    case OpKind::Activation: return OpFamily::Elementwise;
    case OpKind::ScaledResidual: return OpFamily::Elementwise;
    case OpKind::NchwToNhwc: return OpFamily::Layout;
    case OpKind::SampleScale: return OpFamily::Elementwise;
    case OpKind::CrossEntropy: return OpFamily::Elementwise;
    case OpKind::ChannelSlice: return OpFamily::Layout;
    case OpKind::Glu: return OpFamily::Elementwise;
    case OpKind::ChannelAffine: return OpFamily::Norm;
    case OpKind::Rfft2: return OpFamily::Spectral;
    case OpKind::Irfft2: return OpFamily::Spectral;
    case OpKind::ComplexMul: return OpFamily::Elementwise;
    case OpKind::Haar2d: return OpFamily::Spectral;
    case OpKind::Embedding: return OpFamily::Layout;
    case OpKind::AddPositions: return OpFamily::Elementwise;
    case OpKind::CausalAttention: return OpFamily::Attention;
    case OpKind::CausalConv1d: return OpFamily::Depthwise;
    case OpKind::SelectiveScan: return OpFamily::Attention;  // the token mixing of S6, as attention's
    case OpKind::BidirectionalScan: return OpFamily::Attention;
    case OpKind::PonetPool: return OpFamily::Pooling;
    case OpKind::RmsNorm: return OpFamily::Norm;
    case OpKind::BatchNorm: return OpFamily::Norm;
    case OpKind::Permute: return OpFamily::Layout;
    case OpKind::SpatialShift: return OpFamily::Layout;
    case OpKind::ResizeBicubic: return OpFamily::Pooling;
    case OpKind::StripMix: return OpFamily::Gemm;
    case OpKind::SplitAttention: return OpFamily::Elementwise;
    case OpKind::Grn: return OpFamily::Norm;
    case OpKind::Gate: return OpFamily::Elementwise;
    case OpKind::ConvTranspose2d: return OpFamily::Conv;
    case OpKind::MaxPool2d: return OpFamily::Pooling;
    case OpKind::AvgPool2d: return OpFamily::Pooling;
    case OpKind::UpsampleNearest: return OpFamily::Pooling;
    case OpKind::SoftmaxGate: return OpFamily::Elementwise;
    case OpKind::AugmentCrops: return OpFamily::Layout;
    case OpKind::MixImages: return OpFamily::Layout;
    case OpKind::AdamWStep: return OpFamily::Elementwise;
    case OpKind::GradNorm: return OpFamily::Elementwise;
    case OpKind::EmaUpdate: return OpFamily::Elementwise;
    case OpKind::kCount: break;
  }
  return OpFamily::Elementwise;
}

const char* op_family_name(OpFamily f) {
  switch (f) {
    case OpFamily::Gemm: return "gemm";
    case OpFamily::Conv: return "conv";
    case OpFamily::Depthwise: return "depthwise conv";
    case OpFamily::Norm: return "norm";
    case OpFamily::Pooling: return "pooling";
    case OpFamily::Attention: return "attention";
    case OpFamily::Spectral: return "fft/wavelet";
    case OpFamily::Elementwise: return "elementwise";
    case OpFamily::Layout: return "layout";
    case OpFamily::kCount: break;
  }
  return "?";
}

const char* act_name(ActKind a) {
  switch (a) {
    case ActKind::Identity: return "identity";
    case ActKind::GELU: return "gelu";
    case ActKind::StarReLU: return "starrelu";
    case ActKind::SquaredReLU: return "squared_relu";
    case ActKind::ReLU: return "relu";
    case ActKind::SiLU: return "silu";
    case ActKind::SoftShrink: return "softshrink";
  }
  return "?";
}

}  // namespace mf
