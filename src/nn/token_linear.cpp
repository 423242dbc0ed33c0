#include "nn/token_linear.h"

#include <fmt/format.h>

namespace mf {

TokenLinear::TokenLinear(int64_t in_tokens, int64_t out_tokens, bool bias, Init weight_init, Init bias_init)
    : in_(in_tokens), out_(out_tokens) {
  weight_ = &add_param("weight", {out_tokens, in_tokens}, weight_init, true);
  if (bias) bias_ = &add_param("bias", {out_tokens}, bias_init, false);
}

std::string TokenLinear::describe() const {
  return fmt::format("{} -> {} tokens{}", in_, out_, bias_ ? ", bias" : "");
}

Tensor TokenLinear::forward(Ctx& ctx, const Tensor& x) {
  MF_CHECK(x.ndim() >= 2 && x.shape().rows() / x.dim(0) == in_,
           "{}: this token layer was built for {} tokens (the model's nominal input size) and cannot take shape {}",
           path(), in_, x.shape().str());
  const Tensor t = x.reshape({x.dim(0), in_, x.shape().last()});
  if (ctx.training) saved_x_ = t;
  return op::token_mix(ctx.exec, v(weight_), t, opt(bias_));
}

Tensor TokenLinear::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  Tensor dx = op::token_mix_backward(ctx.exec, v(weight_), saved_x_, dy, grad_of(weight_), grad_of(bias_));
  saved_x_ = Tensor();
  return dx;
}

}  // namespace mf
