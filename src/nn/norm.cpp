#include "nn/norm.h"

#include <fmt/format.h>

namespace mf {

Norm::Norm(const NormSpec& spec, int64_t channels) : spec_(spec), channels_(channels) {
  MF_CHECK(spec.type == "layer_norm" || spec.type == "group_norm1" || spec.type == "affine" || spec.type == "rms_norm",
           "unknown norm '{}' (known: layer_norm, group_norm1, affine, rms_norm)", spec.type);
  if (spec.type == "rms_norm") {  // Mamba's RMSNorm: a weight, never a bias
    MF_CHECK(!spec.bias, "the rms_norm has no bias");
    weight_ = &add_param("weight", {channels}, Init::ones(), false);
    return;
  }
  if (spec.type == "affine") {
    // ResMLP's Affine: alpha ⊙ x + beta, parameters of shape [1, 1, C] as timm stores them.
    MF_CHECK(spec.bias, "the affine norm always has a bias (beta)");
    // Weight decay applies: timm exempts only tensors of rank <= 1 and biases, and these are [1, 1, C].
    weight_ = &add_param("alpha", {1, 1, channels}, Init::ones(), true);
    bias_ = &add_param("beta", {1, 1, channels}, Init::zeros(), true);
    return;
  }
  weight_ = &add_param("weight", {channels}, Init::ones(), false);
  if (spec.bias) bias_ = &add_param("bias", {channels}, Init::zeros(), false);
}

std::string Norm::kind() const {
  if (spec_.type == "affine") return "Affine";
  if (spec_.type == "rms_norm") return "RMSNorm";
  const std::string base = spec_.type == "layer_norm" ? "LayerNorm" : "GroupNorm1";
  return spec_.bias ? base : base + "NoBias";
}

std::string Norm::describe() const {
  return spec_.type == "affine" ? fmt::format("{}", channels_) : fmt::format("{}, eps {:g}", channels_, spec_.eps);
}

Tensor Norm::forward(Ctx& ctx, const Tensor& x) {
  if (ctx.training) saved_x_ = x;
  const float eps = static_cast<float>(spec_.eps);
  if (spec_.type == "affine") return op::channel_affine(ctx.exec, x, v(weight_), v(bias_));
  if (spec_.type == "rms_norm") return op::rms_norm(ctx.exec, x, v(weight_), eps);
  if (spec_.type == "layer_norm") return op::layer_norm(ctx.exec, x, v(weight_), opt(bias_), eps);
  return op::group_norm1(ctx.exec, x, v(weight_), opt(bias_), eps);
}

std::optional<BranchNorm> Norm::as_branch_norm() {
  if (spec_.type == "affine" || spec_.type == "rms_norm") return std::nullopt;
  BranchNorm n;
  n.type = spec_.type == "layer_norm" ? BranchNorm::Type::layer_norm : BranchNorm::Type::group_norm1;
  n.weight = &v(weight_);
  n.bias = opt(bias_);
  n.eps = static_cast<float>(spec_.eps);
  return n;
}

Tensor Norm::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  const float eps = static_cast<float>(spec_.eps);
  if (spec_.type == "affine") {
    Tensor dx = op::channel_affine_backward(ctx.exec, saved_x_, v(weight_), dy, grad_of(weight_), grad_of(bias_));
    saved_x_ = Tensor();
    return dx;
  }
  if (spec_.type == "rms_norm") {
    Tensor dx = op::rms_norm_backward(ctx.exec, saved_x_, v(weight_), eps, dy, grad_of(weight_));
    saved_x_ = Tensor();
    return dx;
  }
  Tensor dx = spec_.type == "layer_norm"
                  ? op::layer_norm_backward(ctx.exec, saved_x_, v(weight_), eps, dy, grad_of(weight_), grad_of(bias_))
                  : op::group_norm1_backward(ctx.exec, saved_x_, v(weight_), eps, dy, grad_of(weight_), grad_of(bias_));
  saved_x_ = Tensor();
  return dx;
}

void Norm::collect_ops(std::set<OpKind>& ops) const {
  ops.insert(spec_.type == "affine"       ? OpKind::ChannelAffine
             : spec_.type == "rms_norm"   ? OpKind::RmsNorm
             : spec_.type == "layer_norm" ? OpKind::LayerNorm
                                          : OpKind::GroupNorm1);
}

}  // namespace mf
