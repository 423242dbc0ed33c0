#include "nn/conv.h"

#include <fmt/format.h>

#include "nn/activation.h"

namespace mf {

Conv2d::Conv2d(int64_t in, int64_t out, int kernel, int stride, int padding, bool bias)
    : in_(in), out_(out), g_{kernel, kernel, stride, stride, padding, padding} {
  weight_ = &add_param("weight", {out, in, kernel, kernel}, Init::trunc_normal(0.02f), true);
  if (bias) bias_ = &add_param("bias", {out}, Init::zeros(), false);
}

Conv2d::Conv2d(int64_t in, int64_t out, const ConvGeometry& g, bool bias) : in_(in), out_(out), g_(g) {
  weight_ = &add_param("weight", {out, in, g.kernel_h, g.kernel_w}, Init::trunc_normal(0.02f), true);
  if (bias) bias_ = &add_param("bias", {out}, Init::zeros(), false);
}

std::string Conv2d::describe() const {
  return fmt::format("{} -> {}, {}x{}, stride {}, padding {}{}", in_, out_, g_.kernel_h, g_.kernel_w,
                     g_.stride_h == g_.stride_w ? fmt::format("{}", g_.stride_h) : fmt::format("{}x{}", g_.stride_h, g_.stride_w),
                     g_.pad_h, bias_ ? ", bias" : "");
}

Tensor Conv2d::forward(Ctx& ctx, const Tensor& x) {
  if (ctx.training) saved_x_ = x;
  return op::conv2d(ctx.exec, x, v(weight_), opt(bias_), g_);
}

Tensor Conv2d::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  Tensor dx =
      op::conv2d_backward(ctx.exec, saved_x_, v(weight_), g_, dy, needs_input_grad_, grad_of(weight_), grad_of(bias_));
  saved_x_ = Tensor();
  return dx;
}

ConvTranspose2d::ConvTranspose2d(int64_t in, int64_t out, int kernel, int stride, int padding, bool bias)
    : in_(in), out_(out), g_{kernel, kernel, stride, stride, padding, padding} {
  weight_ = &add_param("weight", {in, out, kernel, kernel}, Init::trunc_normal(0.02f), true);
  if (bias) bias_ = &add_param("bias", {out}, Init::zeros(), false);
}

std::string ConvTranspose2d::describe() const {
  return fmt::format("{} -> {}, {}x{} transposed, stride {}, padding {}{}", in_, out_, g_.kernel_h, g_.kernel_w,
                     g_.stride_h, g_.pad_h, bias_ ? ", bias" : "");
}

Tensor ConvTranspose2d::forward(Ctx& ctx, const Tensor& x) {
  if (ctx.training) saved_x_ = x;
  return op::conv_transpose2d(ctx.exec, x, v(weight_), opt(bias_), g_);
}

Tensor ConvTranspose2d::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  Tensor dx = op::conv_transpose2d_backward(ctx.exec, saved_x_, v(weight_), g_, dy, true, grad_of(weight_),
                                            grad_of(bias_));
  saved_x_ = Tensor();
  return dx;
}

DepthwiseConv2d::DepthwiseConv2d(int64_t channels, int kernel, int padding, bool bias, int stride)
    : channels_(channels), g_{kernel, kernel, stride, stride, padding, padding} {
  weight_ = &add_param("weight", {channels, 1, kernel, kernel}, Init::trunc_normal(0.02f), true);
  if (bias) bias_ = &add_param("bias", {channels}, Init::zeros(), false);
}

std::string DepthwiseConv2d::describe() const {
  return fmt::format("{} channels, depthwise {}x{}, padding {}{}", channels_, g_.kernel_h, g_.kernel_w, g_.pad_h,
                     bias_ ? ", bias" : "");
}

Tensor DepthwiseConv2d::forward(Ctx& ctx, const Tensor& x) {
  if (ctx.training) saved_x_ = x;
  return op::depthwise_conv2d(ctx.exec, x, v(weight_), opt(bias_), g_);
}

Tensor DepthwiseConv2d::run_act_train(Ctx& ctx, const Tensor& pre, ActivationLayer& act) {
  Tensor y = op::act_depthwise_conv2d(ctx.exec, pre, act.params(), v(weight_), opt(bias_), g_);
  act.keep_input(pre);
  if (ctx.on_output && !path().empty()) ctx.on_output(path(), y);
  return y;
}

// The input this layer needs is act's (pre): it keeps none of its own (saved_x_ stays empty, so a
// plain backward() after run_act_train fails with its message instead of using a stale input).
Tensor DepthwiseConv2d::backward_through(Ctx& ctx, const Tensor& dy, ActivationLayer& act) {
  ActivationLayer::Kept kept = act.take_kept();
  return op::act_depthwise_conv2d_backward(ctx.exec, kept.pre, act.params(), v(weight_), g_, dy, grad_of(weight_),
                                           grad_of(bias_), kept.dscale, kept.dbias);
}

Tensor DepthwiseConv2d::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  Tensor dx = op::depthwise_conv2d_backward(ctx.exec, saved_x_, v(weight_), g_, dy, grad_of(weight_), grad_of(bias_));
  saved_x_ = Tensor();
  return dx;
}

}  // namespace mf
