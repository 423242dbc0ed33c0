// iFormer's Inception token mixer (sail-sg/iFormer, models/inception_transformer.py's Mixer), shared by
// the `inception` mixer and the iFormer networks (model/iformer.cpp; docs/wavemix-and-iformer.md).
#pragma once

#include "mixers/mixer.h"

namespace mf {

class Linear;
class DepthwiseConv2d;
class InceptionHighMixer;
class InceptionLowMixer;

// x [B, H, W, C] -> [B, H, W, C]. With head_dim = C / heads, the last attention_heads · head_dim
// channels (low) go to the low-frequency mixer and the first C - low (high, even) to the
// high-frequency one:
//   high_mixer: its first half through conv1 (1×1, no bias, doubling the width), proj1 (3×3
//     depthwise, no bias) and GELU; its second half through a 3×3 stride-1 max pool, proj2 (1×1,
//     doubling the width) and GELU: 2·high channels.
//   low_mixer: average pooling pool_size × pool_size (pool_size 1: none), multi-head self-attention
//     (qkv with bias, attention_heads heads of head_dim, no output projection), nearest upsampling
//     back: low channels.
//   the two concatenated (F = 2·high + low channels), plus conv_fuse (3×3 depthwise, no bias) of
//   themselves, then proj (1×1, F -> C).
// Keys: high_mixer.conv1.weight, high_mixer.proj1.weight, high_mixer.proj2.{weight, bias},
// low_mixer.qkv.{weight, bias}, conv_fuse.weight, proj.{weight, bias}, as the authors'.
class InceptionMixer : public TokenMixer {
 public:
  InceptionMixer(int64_t dim, int heads, int attention_heads, int pool_size);
  std::string kind() const override { return "Mixer"; }
  std::string describe() const override;
  void collect_ops(std::set<OpKind>& ops) const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  int64_t dim_, high_, low_;
  int attention_heads_, pool_size_;
  InceptionHighMixer* high_mixer_;
  InceptionLowMixer* low_mixer_;
  DepthwiseConv2d* conv_fuse_;
  Linear* proj_;
};

}  // namespace mf
