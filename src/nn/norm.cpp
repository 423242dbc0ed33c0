#include "nn/norm.h"

#include <fmt/format.h>

#include <cmath>

#include "nn/conv.h"

namespace mf {

Norm::Norm(const NormSpec& spec, int64_t channels) : spec_(spec), channels_(channels) {
  MF_CHECK(spec.type == "layer_norm" || spec.type == "group_norm1" || spec.type == "affine" ||
               spec.type == "rms_norm" || spec.type == "batch_norm",
           "unknown norm '{}' (known: layer_norm, group_norm1, affine, rms_norm, batch_norm)", spec.type);
  if (spec.type == "rms_norm") {  // Mamba's RMSNorm: a weight, never a bias
    MF_CHECK(!spec.bias, "the rms_norm has no bias");
    weight_ = &add_param("weight", {channels}, Init::ones(), false);
    return;
  }
  if (spec.type == "batch_norm") {
    MF_CHECK(spec.bias, "batch_norm always has a bias");
    weight_ = &add_param("weight", {channels}, Init::ones(), false);
    bias_ = &add_param("bias", {channels}, Init::zeros(), false);
    running_mean_ = &add_buffer("running_mean", {channels}, Init::zeros());
    running_var_ = &add_buffer("running_var", {channels}, Init::ones());
    num_batches_tracked_ = &add_buffer("num_batches_tracked", Shape{}, Init::zeros(), true);  // a 0-d I64
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
  if (spec_.type == "batch_norm") return "BatchNorm2d";
  const std::string base = spec_.type == "layer_norm" ? "LayerNorm" : "GroupNorm1";
  return spec_.bias ? base : base + "NoBias";
}

std::string Norm::describe() const {
  if (spec_.type == "batch_norm") return fmt::format("{}, eps {:g}, momentum {:g}", channels_, spec_.eps, spec_.momentum);
  return spec_.type == "affine" ? fmt::format("{}", channels_) : fmt::format("{}, eps {:g}", channels_, spec_.eps);
}

Tensor Norm::forward(Ctx& ctx, const Tensor& x) {
  if (ctx.training) saved_x_ = x;
  const float eps = static_cast<float>(spec_.eps);
  if (spec_.type == "affine") return op::channel_affine(ctx.exec, x, v(weight_), v(bias_));
  if (spec_.type == "rms_norm") return op::rms_norm(ctx.exec, x, v(weight_), eps);
  if (spec_.type == "batch_norm") {
    if (!ctx.training) return op::batch_norm(ctx.exec, x, v(weight_), opt(bias_), v(running_mean_), v(running_var_), eps);
    Tensor y = op::batch_norm_train(ctx.exec, x, v(weight_), opt(bias_), eps, saved_mean_, saved_var_);
    update_running_stats(saved_mean_, saved_var_, x.shape().rows());
    return y;
  }
  if (spec_.type == "layer_norm") return op::layer_norm(ctx.exec, x, v(weight_), opt(bias_), eps);
  return op::group_norm1(ctx.exec, x, v(weight_), opt(bias_), eps);
}

// PyTorch's _BatchNorm.forward in training: num_batches_tracked += 1; the factor is momentum, or
// 1 / num_batches_tracked when momentum is None (a cumulative average); the running variance takes
// the unbiased batch variance (n / (n - 1) times the biased one it normalised with).
void Norm::update_running_stats(const Tensor& batch_mean, const Tensor& batch_var, int64_t count) {
  // On the host, where the buffers may not live (a GPU run keeps them on the device: add_on_host
  // copies them down and back; the batch's statistics come down once).
  float tracked = 0;
  add_on_host(num_batches_tracked_->value, [&](float* t) { tracked = t[0] += 1.f; });
  const double factor = spec_.momentum < 0 ? 1.0 / tracked : spec_.momentum;
  const double unbias = static_cast<double>(count) / static_cast<double>(count - 1);
  const Tensor mean = batch_mean.to(Device::CPU), var = batch_var.to(Device::CPU);
  add_on_host(running_mean_->value, [&](float* rm) {
    for (int64_t c = 0; c < channels_; ++c) rm[c] = static_cast<float>((1 - factor) * rm[c] + factor * mean.data()[c]);
  });
  add_on_host(running_var_->value, [&](float* rv) {
    for (int64_t c = 0; c < channels_; ++c)
      rv[c] = static_cast<float>((1 - factor) * rv[c] + factor * var.data()[c] * unbias);
  });
  running_mean_->value.bump_version();
  running_var_->value.bump_version();
  num_batches_tracked_->value.bump_version();
}

std::pair<Tensor, Tensor> Norm::eval_affine() const {
  MF_CHECK(spec_.type == "batch_norm", "{}: only BatchNorm folds into a neighbouring layer", path());
  Tensor scale = Tensor::zeros({channels_}), shift = Tensor::zeros({channels_});
  // Read on the host (a GPU run keeps the parameters and buffers on the device).
  const Tensor w = weight_->value.to(Device::CPU), b = bias_->value.to(Device::CPU);
  const Tensor mean = running_mean_->value.to(Device::CPU), var = running_var_->value.to(Device::CPU);
  for (int64_t c = 0; c < channels_; ++c) {
    const double s = w.data()[c] / std::sqrt(static_cast<double>(var.data()[c]) + spec_.eps);
    scale.data()[c] = static_cast<float>(s);
    shift.data()[c] = static_cast<float>(b.data()[c] - mean.data()[c] * s);
  }
  return {scale, shift};
}

std::string Norm::affine_signature() const {
  std::string s;
  for (const Parameter* p : {weight_, bias_, running_mean_, running_var_})
    if (p) s += p->value.version_key();
  return s;
}

std::optional<BranchNorm> Norm::as_branch_norm() {
  if (spec_.type == "affine" || spec_.type == "rms_norm" || spec_.type == "batch_norm") return std::nullopt;
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
  if (spec_.type == "batch_norm") {
    Tensor dx = op::batch_norm_backward(ctx.exec, saved_x_, v(weight_), saved_mean_, saved_var_, eps, true, dy,
                                        grad_of(weight_), grad_of(bias_));
    saved_x_ = saved_mean_ = saved_var_ = Tensor();
    return dx;
  }
  Tensor dx = spec_.type == "layer_norm"
                  ? op::layer_norm_backward(ctx.exec, saved_x_, v(weight_), eps, dy, grad_of(weight_), grad_of(bias_))
                  : op::group_norm1_backward(ctx.exec, saved_x_, v(weight_), eps, dy, grad_of(weight_), grad_of(bias_));
  saved_x_ = Tensor();
  return dx;
}

Tensor Norm::backward_add(Ctx& ctx, const Tensor& dy, const Tensor& residual, const Tensor* res_scale,
                          Tensor* d_res_scale) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  if (spec_.type != "layer_norm" && spec_.type != "group_norm1") {
    Tensor skip = residual;
    if (res_scale)
      skip = op::scaled_residual_backward(ctx.exec, saved_x_, res_scale, Tensor(), nullptr, residual, d_res_scale,
                                          nullptr).first;
    return op::scaled_residual(ctx.exec, skip, nullptr, backward(ctx, dy), nullptr);
  }
  const float eps = static_cast<float>(spec_.eps);
  Tensor dx = spec_.type == "layer_norm"
                  ? op::layer_norm_backward(ctx.exec, saved_x_, v(weight_), eps, dy, grad_of(weight_), grad_of(bias_),
                                            &residual, res_scale, d_res_scale)
                  : op::group_norm1_backward(ctx.exec, saved_x_, v(weight_), eps, dy, grad_of(weight_), grad_of(bias_),
                                             &residual, res_scale, d_res_scale);
  saved_x_ = Tensor();
  return dx;
}

void Norm::collect_ops(std::set<OpKind>& ops) const {
  if (spec_.type == "batch_norm") {
    ops.insert(OpKind::BatchNorm);
    return;
  }
  ops.insert(spec_.type == "affine"       ? OpKind::ChannelAffine
             : spec_.type == "rms_norm"   ? OpKind::RmsNorm
             : spec_.type == "layer_norm" ? OpKind::LayerNorm
                                          : OpKind::GroupNorm1);
}

std::pair<Tensor, Tensor> fold_batch_norm(const Tensor& weight, const Tensor* bias, const Norm& bn) {
  // Cached with the weight until it, the bias or the norm's parameters and statistics change: every
  // inference pass folds again, and a pass replayed as a CUDA graph must not copy between host and
  // device (a fresh folded tensor is a fresh upload).
  struct Folded {
    std::string signature;
    Tensor w, b;
  };
  std::string signature = bn.affine_signature();
  for (const Tensor* t : {&weight, bias})
    if (t) signature += t->version_key();
  if (auto c = std::static_pointer_cast<Folded>(weight.derived("fold_batch_norm")); c && c->signature == signature)
    return {c->w, c->b};
  const auto [scale, shift] = bn.eval_affine();
  const int64_t out = weight.dim(0), per = weight.numel() / out;
  MF_CHECK(out == scale.numel(), "folding BatchNorm: {} channels after a layer of {} outputs", scale.numel(), out);
  // On the host (the weights may live on the GPU); the folded copies are host tensors, uploaded by
  // the backend that reads them.
  Tensor w = weight.to(Device::CPU).clone(), b = Tensor::zeros({out});
  const Tensor bh = bias ? bias->to(Device::CPU) : Tensor();
  for (int64_t o = 0; o < out; ++o) {
    const float s = scale.data()[o];
    for (int64_t k = 0; k < per; ++k) w.data()[o * per + k] *= s;
    b.data()[o] = (bias ? bh.data()[o] : 0.f) * s + shift.data()[o];
  }
  weight.set_derived("fold_batch_norm", std::make_shared<Folded>(Folded{signature, w, b}));
  return {w, b};
}

Tensor conv_then_norm(Ctx& ctx, Conv2d& conv, Norm* norm, const Tensor& x) {
  if (norm && !ctx.training && norm->spec().type == "batch_norm") {
    const auto [w, b] = fold_batch_norm(conv.weight()->value, conv.bias() ? &conv.bias()->value : nullptr, *norm);
    return op::conv2d(ctx.exec, x, w, &b, conv.geometry());
  }
  Tensor y = conv.run(ctx, x);
  return norm ? norm->run(ctx, y) : y;
}

}  // namespace mf
