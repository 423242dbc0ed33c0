// Linear layer over the last (channel) dimension. timm writes the same operation two ways —
// nn.Linear with weight [out, in] and a 1×1 nn.Conv2d with weight [out, in, 1, 1] — and in
// channels-last they are one GEMM; `conv1x1` only keeps timm's weight shape for the state dict.
#pragma once

#include "nn/activation.h"
#include "nn/module.h"

namespace mf {

class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias, bool conv1x1 = false);
  std::string kind() const override { return conv1x1_ ? "Conv2d" : "Linear"; }
  std::string describe() const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  // act(this(x)). At inference one op with the activation fused into the GEMM (op::linear_act, no
  // pre-activation written to memory); in training the two layers run as usual, each keeping what
  // its backward needs. When fused, neither layer reports its output to ctx.on_output.
  Tensor run_then(Ctx& ctx, const Tensor& x, ActivationLayer& act);
  // act(this(x)) in a training step, for a caller that runs the pair's backward through the next
  // Linear's backward_through (the MLP): one op (op::linear_act_train) that keeps x here and the
  // pre-activation in `act`, whose own backward is then not called.
  Tensor run_act_train(Ctx& ctx, const Tensor& x, ActivationLayer& act);
  // This layer's backward together with that of the activation in front of it (`act`, which
  // run_act_train ran): returns the gradient of act's input (op::linear_act_backward).
  Tensor backward_through(Ctx& ctx, const Tensor& dy, ActivationLayer& act);
  // skip + ls ⊙ this(x) in a training step (op::linear_scaled_residual; the caller checked
  // Backend::folds_layer_scales): keeps x, and reports no output of its own to ctx.on_output.
  Tensor run_scaled_residual_train(Ctx& ctx, const Tensor& x, const Tensor& skip, const Tensor& ls);
  // skip + this(x) in a training step (op::linear_residual; the caller checked
  // Backend::fuses_residual_into_linear): keeps x, reports no output of its own to ctx.on_output, and
  // its backward is this layer's usual one.
  Tensor run_residual_train(Ctx& ctx, const Tensor& x, const Tensor& skip);
  // Its backward together with that of the activation in front of it (as backward_through): returns
  // the gradient of act's input; the layer scale's gradient is added into `dls` where not null.
  Tensor backward_through_scaled(Ctx& ctx, const Tensor& dy, ActivationLayer& act, const Tensor& ls, Tensor* dls);
  // The first layer of a model need not compute the gradient of its input.
  void set_needs_input_grad(bool v) { needs_input_grad_ = v; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::Linear); }

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  Parameter* weight() { return weight_; }
  Parameter* bias() { return bias_; }

 private:
  int64_t in_, out_;
  bool conv1x1_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  bool needs_input_grad_ = true;
  Tensor saved_x_;
};

}  // namespace mf
