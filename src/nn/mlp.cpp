#include "nn/mlp.h"

namespace mf {

Mlp::Mlp(int64_t dim, int64_t hidden, const std::string& act, bool bias, bool conv1x1, bool glu, bool softmax_gate)
    : glu_(glu), hidden_(hidden) {
  MF_CHECK(!glu || hidden % 2 == 0, "a gated MLP needs an even hidden width, not {}", hidden);
  fc1_ = add_child("fc1", std::make_unique<Linear>(dim, hidden, bias, conv1x1));
  act_ = add_child("act", make_activation(act));
  fc2_ = add_child("fc2", std::make_unique<Linear>(glu ? hidden / 2 : hidden, dim, bias, conv1x1));
  if (softmax_gate) gate_ = add_child("gate", std::make_unique<Linear>(dim, dim, true));
}

Tensor Mlp::forward(Ctx& ctx, const Tensor& x) {
  Tensor y = forward_mlp(ctx, x);
  if (!gate_) return y;
  const Tensor logits = gate_->run(ctx, y);
  if (ctx.training) {
    saved_y_ = y;
    saved_logits_ = logits;
  }
  // Softmax over the channels: each token is one [C, 1] slab of softmax_gate's [A, N, I].
  const Shape cols{y.shape().rows(), y.shape().last(), 1};
  return op::softmax_gate(ctx.exec, y.reshape(cols), logits.reshape(cols)).reshape(y.shape());
}

Tensor Mlp::forward_mlp(Ctx& ctx, const Tensor& x) {
  if (glu_) {
    Tensor h = fc1_->run(ctx, x);
    if (ctx.training) saved_h_ = h;
    // x1 ⊙ act(x2): the gate is the second half.
    return fc2_->run(ctx, op::glu(ctx.exec, h, nullptr, hidden_ / 2, 0, hidden_ / 2, act_->params()));
  }
  // Inference: one fused op (op::mlp); fc1, act and fc2 then report no outputs of their own to
  // ctx.on_output (the block and stage outputs still do).
  if (!ctx.training)
    return op::mlp(ctx.exec, x, v(fc1_->weight()), opt(fc1_->bias()), act_->params(), v(fc2_->weight()),
                   opt(fc2_->bias()));
  // Training: fc1 and the activation as one op, whose backward runs with fc2's (backward_mlp).
  return fc2_->run(ctx, fc1_->run_act_train(ctx, x, *act_));
}

Tensor Mlp::run_branch(Ctx& ctx, const Tensor& x, Norm& norm, const BranchScales& scales) {
  const std::optional<BranchNorm> bn = norm.as_branch_norm();
  if (ctx.training || glu_ || gate_ || !bn) {
    return op::scaled_residual(ctx.exec, x, scales.res_scale, run(ctx, norm.run(ctx, x)), scales.layer_scale);
  }
  return op::mlp_branch(ctx.exec, x, *bn, v(fc1_->weight()), opt(fc1_->bias()), act_->params(), v(fc2_->weight()),
                        opt(fc2_->bias()), scales);
}

Tensor Mlp::run_branch_owned(Ctx& ctx, Tensor x, Norm& norm, const BranchScales& scales) {
  const std::optional<BranchNorm> bn = norm.as_branch_norm();
  if (ctx.training || glu_ || gate_ || !bn) return run_branch(ctx, x, norm, scales);
  return op::mlp_branch_(ctx.exec, std::move(x), *bn, v(fc1_->weight()), opt(fc1_->bias()), act_->params(),
                         v(fc2_->weight()), opt(fc2_->bias()), scales);
}

Tensor Mlp::run_scaled_residual_train(Ctx& ctx, const Tensor& x, const Tensor& skip, const Tensor& ls) {
  MF_CHECK(ctx.training && can_fold_layer_scale(), "{}: the folded layer scale is for a plain MLP in training",
           path());
  return fc2_->run_scaled_residual_train(ctx, fc1_->run_act_train(ctx, x, *act_), skip, ls);
}

Tensor Mlp::run_residual_train(Ctx& ctx, const Tensor& x, const Tensor& skip) {
  if (!ctx.training || glu_ || gate_) return Tensor();
  return fc2_->run_residual_train(ctx, fc1_->run_act_train(ctx, x, *act_), skip);
}

Tensor Mlp::backward_scaled(Ctx& ctx, const Tensor& dy, const Tensor& ls, Tensor* dls) {
  return fc1_->backward(ctx, fc2_->backward_through_scaled(ctx, dy, *act_, ls, dls));
}

Tensor Mlp::backward(Ctx& ctx, const Tensor& dy) {
  if (!gate_) return backward_mlp(ctx, dy);
  MF_CHECK(saved_y_.defined(), "{}: backward without a training forward", path());
  const Shape cols{dy.shape().rows(), dy.shape().last(), 1};
  auto [dy_mlp, dlogits] = op::softmax_gate_backward(ctx.exec, saved_y_.reshape(cols), saved_logits_.reshape(cols),
                                                     dy.reshape(cols));
  saved_y_ = saved_logits_ = Tensor();
  // y feeds both the gate's logits and the gated product: the two gradients add.
  const Tensor d = op::scaled_residual(ctx.exec, dy_mlp.reshape(dy.shape()), nullptr,
                                       gate_->backward(ctx, dlogits.reshape(dy.shape())), nullptr);
  return backward_mlp(ctx, d);
}

Tensor Mlp::backward_mlp(Ctx& ctx, const Tensor& dy) {
  if (glu_) {
    Tensor dg = fc2_->backward(ctx, dy);
    Tensor dh = op::glu_backward(ctx.exec, saved_h_, nullptr, hidden_ / 2, 0, act_->params(), dg, nullptr);
    saved_h_ = Tensor();
    return fc1_->backward(ctx, dh);
  }
  return fc1_->backward(ctx, fc2_->backward_through(ctx, dy, *act_));
}

}  // namespace mf
