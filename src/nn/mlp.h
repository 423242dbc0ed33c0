// timm's Mlp and GluMlp: fc1 -> act -> fc2 (dropouts are identity at inference). With `glu`, fc1's
// output is split in halves (x1, x2) and fc2 reads x1 ⊙ act(x2) (timm's GluMlp, gate last, as gMixer
// uses it), so fc2 has hidden / 2 inputs.
#pragma once

#include "nn/activation.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace mf {

class Mlp : public Module {
 public:
  // conv1x1: timm builds fc1/fc2 as 1×1 Conv2d (weights [out, in, 1, 1]) in channels-first stages.
  Mlp(int64_t dim, int64_t hidden, const std::string& act, bool bias, bool conv1x1, bool glu = false);
  std::string kind() const override { return glu_ ? "GluMlp" : "Mlp"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  // this(norm(x)). At inference with a LayerNorm, one fused op (op::layer_norm_mlp: the normalised
  // rows never reach memory); otherwise the two modules in turn.
  Tensor run_normed(Ctx& ctx, const Tensor& x, Norm& norm);
  void collect_ops(std::set<OpKind>& ops) const override {
    if (glu_) ops.insert(OpKind::Glu);
  }

 private:
  bool glu_;
  int64_t hidden_;
  Linear* fc1_;
  ActivationLayer* act_;
  Linear* fc2_;
  Tensor saved_h_;  // glu: fc1's output
};

}  // namespace mf
