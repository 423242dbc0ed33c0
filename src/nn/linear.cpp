#include "nn/linear.h"

#include <fmt/format.h>

namespace mf {

Linear::Linear(int64_t in, int64_t out, bool bias, bool conv1x1) : in_(in), out_(out), conv1x1_(conv1x1) {
  weight_ = &add_param("weight", conv1x1 ? Shape{out, in, 1, 1} : Shape{out, in}, Init::trunc_normal(0.02f), true);
  if (bias) bias_ = &add_param("bias", {out}, Init::zeros(), false);
}

std::string Linear::describe() const {
  return fmt::format("{} -> {}{}{}", in_, out_, conv1x1_ ? ", 1x1" : "", bias_ ? ", bias" : "");
}

Tensor Linear::forward(Ctx& ctx, const Tensor& x) {
  if (ctx.training) saved_x_ = x;
  return op::linear(ctx.exec, x, v(weight_), opt(bias_));
}

Tensor Linear::run_then(Ctx& ctx, const Tensor& x, ActivationLayer& act) {
  if (ctx.training) {
    Tensor h = run(ctx, x);
    act.apply_(ctx, h);
    return h;
  }
  return op::linear_act(ctx.exec, x, v(weight_), opt(bias_), act.params());
}

Tensor Linear::run_act_train(Ctx& ctx, const Tensor& x, ActivationLayer& act) {
  saved_x_ = x;
  auto [y, pre] = op::linear_act_train(ctx.exec, x, v(weight_), opt(bias_), act.params());
  if (ctx.on_output && !path().empty()) ctx.on_output(path(), pre);
  act.keep_input(pre);
  return y;
}

Tensor Linear::backward_through(Ctx& ctx, const Tensor& dy, ActivationLayer& act) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  ActivationLayer::Kept kept = act.take_kept();
  Tensor dpre = op::linear_act_backward(ctx.exec, saved_x_, kept.pre, act.params(), v(weight_), dy, grad_of(weight_),
                                        grad_of(bias_), kept.dscale, kept.dbias);
  saved_x_ = Tensor();
  return dpre;
}

Tensor Linear::run_scaled_residual_train(Ctx& ctx, const Tensor& x, const Tensor& skip, const Tensor& ls) {
  saved_x_ = x;
  return op::linear_scaled_residual(ctx.exec, x, v(weight_), opt(bias_), ls, skip);
}

Tensor Linear::run_residual_train(Ctx& ctx, const Tensor& x, const Tensor& skip) {
  saved_x_ = x;
  return op::linear_residual(ctx.exec, x, v(weight_), opt(bias_), skip);
}

Tensor Linear::backward_through_scaled(Ctx& ctx, const Tensor& dy, ActivationLayer& act, const Tensor& ls,
                                       Tensor* dls) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  ActivationLayer::Kept kept = act.take_kept();
  Tensor dpre = op::linear_act_scaled_backward(ctx.exec, saved_x_, kept.pre, act.params(), v(weight_), opt(bias_), ls,
                                               dy, grad_of(weight_), grad_of(bias_), dls, kept.dscale, kept.dbias);
  saved_x_ = Tensor();
  return dpre;
}

Tensor Linear::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  Tensor dx = op::linear_backward(ctx.exec, saved_x_, v(weight_), dy, needs_input_grad_, grad_of(weight_),
                                  grad_of(bias_));
  saved_x_ = Tensor();
  return dx;
}

}  // namespace mf
