// timm's Mlp and GluMlp: fc1 -> act -> fc2 (dropouts are identity at inference). With `glu`, fc1's
// output is split in halves (x1, x2) and fc2 reads x1 ⊙ act(x2) (timm's GluMlp, gate last, as gMixer
// uses it), so fc2 has hidden / 2 inputs. With `softmax_gate` (PatchTSMixer's gated attention in its
// feature mixer), the output y becomes y ⊙ softmax(gate(y)) over the channels, gate a Linear [dim, dim].
#pragma once

#include "nn/activation.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace mf {

class Mlp : public Module {
 public:
  // conv1x1: timm builds fc1/fc2 as 1×1 Conv2d (weights [out, in, 1, 1]) in channels-first stages.
  Mlp(int64_t dim, int64_t hidden, const std::string& act, bool bias, bool conv1x1, bool glu = false,
      bool softmax_gate = false);
  std::string kind() const override { return glu_ ? "GluMlp" : "Mlp"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  // Inference: x ⊙ res_scale + layer_scale ⊙ this(norm(x)), the block's second half, as one fused op
  // (op::mlp_branch: neither the normalised rows nor the bare MLP output reach memory) where the
  // norm and activation allow; otherwise the modules and the residual add in turn.
  Tensor run_branch(Ctx& ctx, const Tensor& x, Norm& norm, const BranchScales& scales);
  // The same with x handed over: the fused branch may write its output over x (op::mlp_branch_).
  Tensor run_branch_owned(Ctx& ctx, Tensor x, Norm& norm, const BranchScales& scales);
  // Training's skip + ls ⊙ this(x) with the layer scale folded into fc2 (Backend::folds_layer_scales):
  // fc2's GEMM adds the residual, so the MLP's output is neither written nor kept. Only for a plain
  // MLP (no GLU, no gate): can_fold_layer_scale(). Its backward is backward_scaled, which returns x's
  // gradient through the MLP (skip's is dy itself) and adds the scale's gradient into `dls`.
  bool can_fold_layer_scale() const { return !glu_ && !gate_; }
  Tensor run_scaled_residual_train(Ctx& ctx, const Tensor& x, const Tensor& skip, const Tensor& ls);
  Tensor backward_scaled(Ctx& ctx, const Tensor& dy, const Tensor& ls, Tensor* dls);
  // Training's skip + this(x) with fc2 adding the residual (Backend::fuses_residual_into_linear), so
  // the MLP's output is never written; its backward is the usual one. Undefined (not here) for a GLU
  // or gated MLP: the caller then runs it and the add in turn.
  Tensor run_residual_train(Ctx& ctx, const Tensor& x, const Tensor& skip);
  void collect_ops(std::set<OpKind>& ops) const override {
    if (glu_) ops.insert(OpKind::Glu);
    if (gate_) ops.insert(OpKind::SoftmaxGate);
  }

 private:
  Tensor forward_mlp(Ctx& ctx, const Tensor& x);
  Tensor backward_mlp(Ctx& ctx, const Tensor& dy);
  Linear* gate_ = nullptr;
  Tensor saved_y_, saved_logits_;  // softmax_gate: the MLP's output and the gate's logits
  bool glu_;
  int64_t hidden_;
  Linear* fc1_;
  ActivationLayer* act_;
  Linear* fc2_;
  Tensor saved_h_;  // glu: fc1's output
};

}  // namespace mf
