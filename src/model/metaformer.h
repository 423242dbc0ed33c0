// The generic MetaFormer: stem, stages of blocks x + mixer(norm(x)), x + mlp(norm(x)) with a token
// mixer per stage, downsampling between stages, and a head. Built from a MetaFormerConfig; the
// module names reproduce timm's state-dict keys exactly. The same classes, with the config's
// `block`, `layout`, stem and head choices, express timm's metaformer.py (PoolFormer, ConvFormer,
// CAFormer...), mambaout.py (MambaOut: one residual branch whose mixer is the gated CNN) and
// mlp_mixer.py (MLP-Mixer, gMixer, ResMLP, gMLP: isotropic, a token MLP as the mixer):
//   stem.{conv,norm | conv1,norm1,conv2,norm2 | proj}  stages.{s}.downsample.{norm,conv}
//   stages.{s}.blocks.{b}.{norm1,token_mixer,layer_scale1,res_scale1,norm2,mlp,...}  head.{norm,fc}
//   (isotropic: blocks.{b}.*, norm, head)
#pragma once

#include <memory>

#include "mixers/mixer.h"
#include "model/config.h"
#include "model/sequence_stem.h"
#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/mlp.h"
#include "nn/norm.h"
#include "nn/scale.h"
#include "nn/sequential.h"

namespace mf {

class TokenMixer;

class Stem : public Module {
 public:
  Stem(int in_chans, int out_chans, const ConvSpec& spec);
  std::string kind() const override { return "Stem"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  // Output side length for an input side length.
  int64_t out_size(int64_t in) const;

 private:
  ConvSpec spec_;
  Conv2d* conv_;             // conv, conv1 or proj
  Norm* norm_ = nullptr;     // norm or norm1 (two_conv)
  ActivationLayer* act_ = nullptr;  // two_conv
  Conv2d* conv2_ = nullptr;  // two_conv
  Norm* norm2_ = nullptr;    // two_conv
};

class Downsampling : public Module {
 public:
  // `geometry`: the spec's square kernel, stride and padding for images; for 1-D sequences the same
  // numbers along the sequence only (a 1 × k kernel, stride 1 × s).
  Downsampling(int in_chans, int out_chans, const ConvSpec& spec, const ConvGeometry& geometry);
  Downsampling(int in_chans, int out_chans, const ConvSpec& spec)  // over images
      : Downsampling(in_chans, out_chans, spec,
                     {spec.kernel_size, spec.kernel_size, spec.stride, spec.stride, spec.padding, spec.padding}) {}
  std::string kind() const override { return "Downsampling"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  Norm* norm_ = nullptr;
  Conv2d* conv_;
  bool norm_after_;
};

class MetaFormerBlock : public Module {
 public:
  MetaFormerBlock(const MetaFormerConfig& c, int stage, int64_t height, int64_t width, double drop_path);
  std::string kind() const override { return "MetaFormerBlock"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  // Inference: the input dropped once the first half's residual has read it.
  Tensor forward_owned(Ctx& ctx, Tensor x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  double drop_path() const { return drop_path_; }

 private:
  // Drop path in training: each sample's branch is zeroed with probability p, else scaled by 1/(1-p).
  Tensor drop_path_mask(Ctx& ctx, int64_t batch) const;
  Tensor mlp_branch_backward(Ctx& ctx, const Tensor& dy);
  // Whether this training step runs the MLP half with its layer scale folded into fc2
  // (Backend::folds_layer_scales; a plain MLP, a layer scale, no res scale, no drop path).
  bool folds_mlp_layer_scale(const Ctx& ctx) const;
  double drop_path_;
  bool mlp_folded_ = false;    // the last training forward folded the MLP half's layer scale
  bool mixer_folded_ = false;  // and the mixer half's (TokenMixer::run_scaled_branch_train)
  // Kept by a training forward for backward: input, branch outputs (after drop path), the middle.
  Tensor saved_x_, saved_mixer_out_, saved_h_, saved_mlp_out_, mask1_, mask2_;
  Norm* norm1_;
  TokenMixer* mixer_;
  Scale* layer_scale1_ = nullptr;
  Scale* res_scale1_ = nullptr;
  Norm* norm2_ = nullptr;  // null (with mlp_) in one-branch blocks
  Mlp* mlp_ = nullptr;
  TokenMixer* channel_mixer_ = nullptr;  // "mlp": {"mixer": ...} instead of the MLP
  Module* second_branch() const { return mlp_ ? static_cast<Module*>(mlp_) : channel_mixer_; }
  Scale* layer_scale2_ = nullptr;
  Scale* res_scale2_ = nullptr;
};

class MetaFormerStage : public Module {
 public:
  MetaFormerStage(const MetaFormerConfig& c, int stage, int in_chans, int64_t height, int64_t width,
                  const std::vector<double>& drop_path);
  std::string kind() const override { return "MetaFormerStage"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor forward_owned(Ctx& ctx, Tensor x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  Downsampling* downsample_ = nullptr;
  Sequential* blocks_;
};

// timm's MlpHead: fc1 -> act -> norm -> fc2.
class MlpHead : public Module {
 public:
  MlpHead(int64_t dim, int num_classes, const HeadSpec& spec);
  std::string kind() const override { return "MlpHead"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  Linear* fc1_;
  ActivationLayer* act_;
  Norm* norm_;
  Linear* fc2_;
};

// MambaOut's head.pre_logits: fc -> act [-> norm].
class PreLogits : public Module {
 public:
  PreLogits(int64_t dim, int64_t hidden, const std::string& act, const std::optional<NormSpec>& norm);
  std::string kind() const override { return "PreLogits"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  Linear* fc_;
  ActivationLayer* act_;
  Norm* norm_ = nullptr;
};

// global average pool -> norm -> [pre_logits] -> fc (Linear or MlpHead). Pool first, then norm, as
// timm does.
class MetaFormerHead : public Module {
 public:
  MetaFormerHead(int64_t dim, int num_classes, const HeadSpec& spec);
  std::string kind() const override { return "Head"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::GlobalAvgPool); }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  Norm* norm_;
  PreLogits* pre_logits_ = nullptr;
  Module* fc_;
  Shape saved_shape_;
};

class MetaFormer : public Module {
 public:
  explicit MetaFormer(const MetaFormerConfig& config);
  std::string kind() const override { return "MetaFormer"; }
  const MetaFormerConfig& config() const { return config_; }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::NchwToNhwc);
    ops.insert(OpKind::GlobalAvgPool);
    if (config_.head.type == "forecast" && config_.sequence.independent_channels()) ops.insert(OpKind::Permute);
  }

  // x: [B, H, W, in_chans] channels-last -> logits [B, num_classes]; a sequence model's x is
  // [B, 1, L, in_chans] (docs/sequences.md)
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  // d(loss)/d(logits) -> accumulates every parameter's gradient (the input's is not computed).
  Tensor backward(Ctx& ctx, const Tensor& dlogits) override;
  // x: [B, in_chans, H, W] as timm takes it -> logits
  Tensor forward_nchw(Ctx& ctx, const Tensor& x);
  // Checks an input shape [B, H, W, C] before running (clear error for a wrong rank/size/channels).
  void check_input(const Shape& nhwc) const;
  // Throws if the backend lacks an op this model needs (no silent fallback).
  void check_backend(const Backend& backend) const;

 private:
  MetaFormerConfig config_;
  Stem* stem_ = nullptr;               // image models (null in the authors' layouts)
  SequenceStem* seq_stem_ = nullptr;   // sequence models (config.sequence)
  Sequential* stages_ = nullptr;  // hierarchical layout
  MetaFormerHead* head_ = nullptr;
  Sequential* blocks_ = nullptr;  // isotropic layout: blocks, then norm over tokens, pooling, linear head
  Norm* norm_ = nullptr;
  Linear* linear_head_ = nullptr;
  Shape saved_tokens_shape_;
  // The series heads (HeadSpec::series_head): the head after the blocks, and its backward.
  Tensor series_head_forward(Ctx& ctx, const Tensor& tokens);
  Tensor series_head_backward(Ctx& ctx, const Tensor& dy);
  std::vector<Module*> affnet_layers_;  // layout "affnet": conv_1, layer_1 .. layer_5, conv_1x1_exp, classifier
  Module* body_ = nullptr;  // the custom layouts' whole network (model/custom_layouts.h)
};

}  // namespace mf
