// RaftMLP's pieces (okojoalg/raft-mlp; docs/raft-and-shift-mlps.md), shared by the `raft` token mixer
// and the RaftMLP networks (model/raftmlp.cpp).
//
// Channels come in r "rafts": channel c = j·(C/r) + k belongs to raft j at offset k. A raft token
// MLP mixes, for each offset k and each column (vertical) or row (horizontal), the r·H (or r·W)
// values of all rafts along that line jointly: one MLP over vectors indexed (j, h). That joint mixing
// across the rafts is what distinguishes it from axial_mlp, whose maps are shared by every channel.
#pragma once

#include <memory>

#include "nn/activation.h"
#include "nn/linear.h"
#include "nn/module.h"

namespace mf {

// The authors' nn.Sequential(Linear, GELU, Dropout, Linear, Dropout): children "0", "1", "3", so that
// the keys are theirs (`fn.0.weight`, `fn.3.weight`); dropout is the identity at inference.
class TorchSeqMlp : public Module {
 public:
  TorchSeqMlp(int64_t in, int64_t hidden);
  std::string kind() const override { return "Mlp"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  Linear* fc1_;
  ActivationLayer* act_;
  Linear* fc2_;
};

// One raft token MLP, the layouts around it included. Input [B, H, W, C] with the channels either in
// the natural order (raft-major: c = j·(C/r) + k) or raft-minor (c' = k·r + j, how the authors'
// LayerNorm before it sees them); output always in the natural order. Children "0", "1", "3".
class RaftAxisMlp : public Module {
 public:
  enum class Axis { vertical, horizontal };
  RaftAxisMlp(Axis axis, int64_t raft, int64_t channels, int64_t height, int64_t width, int64_t expansion);
  std::string kind() const override { return "RaftAxisMlp"; }
  std::string describe() const override;
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::Permute); }
  // Natural-order input.
  Tensor forward(Ctx& ctx, const Tensor& x) override { return mix(ctx, x, false); }
  Tensor mix(Ctx& ctx, const Tensor& x, bool raft_minor_input);
  // The gradient of the input in the layout mix() was given.
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  std::vector<int> in_perm(bool raft_minor) const;
  std::vector<int> out_perm() const;
  Axis axis_;
  int64_t raft_, channels_, height_, width_;
  TorchSeqMlp* mlp_;
  bool saved_raft_minor_ = false;
  Shape saved_shape_;
};

}  // namespace mf
