#include "nn/activation.h"

#include <limits>

namespace mf {

ActKind parse_activation(const std::string& name) {
  for (ActKind k : {ActKind::Identity, ActKind::GELU, ActKind::StarReLU, ActKind::SquaredReLU, ActKind::ReLU,
                    ActKind::SiLU})
    if (name == act_name(k)) return k;
  fail("unknown activation '{}' (known: gelu, starrelu, squared_relu, relu, silu, identity)", name);
}

std::unique_ptr<ActivationLayer> make_activation(const std::string& name) {
  return std::make_unique<ActivationLayer>(parse_activation(name));
}

ActivationLayer::ActivationLayer(ActKind kind) : kind_(kind) {
  if (kind == ActKind::StarReLU) {
    scale_ = &add_param("scale", {1}, Init::ones(), false);
    bias_ = &add_param("bias", {1}, Init::zeros(), false);
  }
}

std::string ActivationLayer::kind() const {
  switch (kind_) {
    case ActKind::Identity: return "Identity";
    case ActKind::GELU: return "GELU";
    case ActKind::StarReLU: return "StarReLU";
    case ActKind::SquaredReLU: return "SquaredReLU";
    case ActKind::ReLU: return "ReLU";
    case ActKind::SiLU: return "SiLU";
    case ActKind::SoftShrink: return "Softshrink";
  }
  return "?";
}

// StarReLU's scale and bias: values on the host; on a GPU run, where the parameters live on the
// device, their addresses, which the CUDA kernels read there (no copy to the host per step; the
// values are then NaN, so a path that missed the addresses shows at once).
Activation ActivationLayer::params() const {
  Activation a{kind_, 1.f, 0.f};
  if (!scale_) return a;
  if (scale_->value.device() == Device::CPU) {
    a.scale = scale_->value.data()[0];
    a.bias = bias_->value.data()[0];
  } else {
    a.scale_on_device = scale_->value.data();
    a.bias_on_device = bias_->value.data();
    a.scale = a.bias = std::numeric_limits<float>::quiet_NaN();
  }
  return a;
}

Tensor ActivationLayer::forward(Ctx& ctx, const Tensor& x) {
  if (ctx.training) saved_x_ = x;
  return kind_ == ActKind::Identity ? x : op::activation(ctx.exec, x, params());
}

void ActivationLayer::apply_(Ctx& ctx, Tensor& x) {
  if (ctx.training) {
    x = forward(ctx, x);
    return;
  }
  op::activation_(ctx.exec, x, params());
}

Tensor ActivationLayer::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  Tensor x = std::move(saved_x_);
  saved_x_ = Tensor();
  if (kind_ == ActKind::Identity) return dy;
  // The scalars' gradients accumulate where they live (the device on a GPU run).
  return op::activation_backward(ctx.exec, x, params(), dy, grad_of(scale_), grad_of(bias_));
}

ActivationLayer::Kept ActivationLayer::take_kept() {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  Kept k{std::move(saved_x_), grad_of(scale_), grad_of(bias_)};
  saved_x_ = Tensor();
  return k;
}

void ActivationLayer::collect_ops(std::set<OpKind>& ops) const {
  if (kind_ != ActKind::Identity) ops.insert(OpKind::Activation);
}

}  // namespace mf
