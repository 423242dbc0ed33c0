// Strip-MLP's token mixing (Cao et al., "Strip-MLP", ICCV 2023; Med-Process/Strip_MLP), shared by the
// `strip` mixer and the Strip-MLP networks (model/stripmlp.cpp). Keys as the authors' TokenMixing:
//   dwsc.conv_merge.{BN, Conv}        BatchNorm, GELU, depthwise 3×3 (no bias)
//   smlp_block.*                      StripMLP_Block (see StripMlpBlock below)
// The token grid is fixed at construction (the strip projections mix whole rows and columns of it),
// and must be square, as the authors' block asserts.
#pragma once

#include "mixers/mixer.h"

namespace mf {

class Norm;
class Linear;
class ActivationLayer;

// A depthwise convolution without bias, any kernel h×w with same padding (fc_h is 3×7, fc_w 7×3).
class DepthwiseNoBias : public Module {
 public:
  DepthwiseNoBias(int64_t channels, int kh, int kw);
  std::string kind() const override { return "Conv2d"; }
  std::string describe() const override;
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::DepthwiseConv2d); }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  ConvGeometry g_;
  Parameter* weight_;
  Tensor saved_x_;
};

// The authors' RelativePosition: a table [2M + 1, C] (M = the grid size it was built for); for an
// H×W grid, position (i, j) reads row clamp(j − i, −M, M) + M.
class RelativePosition : public Module {
 public:
  RelativePosition(int64_t channels, int64_t max_distance);
  std::string kind() const override { return "RelativePosition"; }
  // [H·W, C]
  Tensor table_for(int64_t height, int64_t width) const;
  // dpos [H·W, C] accumulated into the table's gradient.
  void accumulate_grad(const Tensor& dpos, int64_t height, int64_t width);

 private:
  int64_t row(int64_t i, int64_t j) const;
  int64_t max_;
  Parameter* table_;
};

// StripMLP_Block: mlp (1×1 conv, BatchNorm, GELU), then half the channels through the strip MLP
// (positions, proj_h along rows, fuse_h with the input, BatchNorm, GELU, positions, proj_w along
// columns, fuse_w with the input), the other half through fc_h (3×7) and fc_w (7×3) reweighted with
// itself by reweight (split attention), and fuse over both halves.
class StripMlpBlock : public Module {
 public:
  StripMlpBlock(int64_t channels, int64_t grid);
  std::string kind() const override { return "StripMLP_Block"; }
  std::string describe() const override;
  void collect_ops(std::set<OpKind>& ops) const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  int64_t channels_, half_, grid_, groups_;
  ActivationLayer* act_;  // `activation`, after BN
  Norm* bn_;
  Parameter *proj_h_w_, *proj_h_b_, *proj_w_w_, *proj_w_b_;
  Linear *fuse_h_, *fuse_w_;
  Linear* mlp_conv_;
  Norm* mlp_bn_;
  ActivationLayer* mlp_act_;
  DepthwiseNoBias *fc_h_, *fc_w_;
  Linear* reweight_fc1_;
  ActivationLayer* reweight_act_;
  Linear* reweight_fc2_;
  Linear* fuse_;
  RelativePosition *pos_h_, *pos_w_;
  // What backward needs (training).
  Tensor saved_a_, saved_u_, saved_x2_, saved_xh_, saved_xw_, saved_logits_;
  Shape saved_shape_;
};

// The authors' TokenMixing: smlp_block(dwsc(x)). As a MetaFormer mixer, the block's norm and residual
// surround it.
class StripTokenMixing : public TokenMixer {
 public:
  StripTokenMixing(int64_t channels, int64_t height, int64_t width);
  std::string kind() const override { return "TokenMixing"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  StripMlpBlock* block_;
  Module* dwsc_;
};

}  // namespace mf
