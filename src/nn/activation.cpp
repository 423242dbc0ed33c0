#include "nn/activation.h"

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

namespace {
// A one-element parameter's value on the host. The kernels take StarReLU's scale and bias as
// arguments; when training on a GPU the parameters live there, so the value is copied down once per
// version (once per optimizer step) and cached with the tensor.
float host_scalar(const Tensor& t) {
  if (t.device() == Device::CPU) return t.data()[0];
  static const std::string key = "host_scalar";
  if (auto d = t.derived(key)) return *static_cast<const float*>(d.get());
  auto v = std::make_shared<float>(t.to(Device::CPU).data()[0]);
  t.set_derived(key, v);
  return *v;
}

// g[0] += v for a one-element gradient wherever it lives (a GPU one goes down and back up).
void add_to_scalar(Tensor& g, float v) {
  if (g.device() == Device::CPU) {
    g.data()[0] += v;
    return;
  }
  Tensor h = g.to(Device::CPU);
  h.data()[0] += v;
  g.copy_from(h);
}
}  // namespace

Activation ActivationLayer::params() const {
  Activation a{kind_, 1.f, 0.f};
  if (scale_) {
    a.scale = host_scalar(scale_->value);
    a.bias = host_scalar(bias_->value);
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
  Tensor* gs = grad_of(scale_);
  Tensor* gb = grad_of(bias_);
  if (!gs && !gb) return op::activation_backward(ctx.exec, x, params(), dy, nullptr);
  Tensor dparams = Tensor::zeros({2});
  Tensor dx = op::activation_backward(ctx.exec, x, params(), dy, &dparams);
  if (gs) add_to_scalar(*gs, dparams.data()[0]);
  if (gb) add_to_scalar(*gb, dparams.data()[1]);
  return dx;
}

void ActivationLayer::collect_ops(std::set<OpKind>& ops) const {
  if (kind_ != ActKind::Identity) ops.insert(OpKind::Activation);
}

}  // namespace mf
