// MS-MLP (Zheng et al., JegZheng/MS-MLP), as the authors' MS_MLP class builds it:
//   patch_embed.{proj, norm}                 4×4 stride-4 conv, then LayerNorm
//   layers.{i}.blocks.{b}: dwconv_lr.{g}, dwconv_td.{g}, norm, pwconv1, pwconv2, gamma
//       x + gamma ⊙ pwconv2(GELU(pwconv1(norm(mix_shift(x)))))  (the mixer before the norm, no
//       residual of its own: one branch per block)
//   layers.{i}.downsample.{proj, norm}       2×2 stride-2 conv, then LayerNorm (after stages 0..n-2)
//   norm, head                               mean over tokens, LayerNorm, Linear
#include <fmt/format.h>

#include "mixers/mix_shift.h"
#include "model/custom_layouts.h"
#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/scale.h"
#include "nn/sequential.h"

namespace mf {

namespace {

// The authors' PatchEmbed: proj, then norm over the channels of every token.
class PatchEmbed : public Module {
 public:
  PatchEmbed(int64_t in, int64_t out, const ConvSpec& spec, bool needs_input_grad) {
    proj_ = add_child("proj", std::make_unique<Conv2d>(in, out, spec.kernel_size, spec.stride, spec.padding, true));
    proj_->set_needs_input_grad(needs_input_grad);
    if (spec.norm) norm_ = add_child("norm", std::make_unique<Norm>(*spec.norm, out));
  }
  std::string kind() const override { return "PatchEmbed"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor y = proj_->run(ctx, x);
    return norm_ ? norm_->run(ctx, y) : y;
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    return proj_->backward(ctx, norm_ ? norm_->backward(ctx, dy) : dy);
  }

 private:
  Conv2d* proj_;
  Norm* norm_ = nullptr;
};

class MixShiftBlock : public Module {
 public:
  MixShiftBlock(const MetaFormerConfig& c, size_t s) {
    const int64_t dim = c.dims[s];
    // Registered in the authors' state-dict order: gamma (a parameter of the block itself), then
    // the mixer's convolutions, norm, pwconv1, pwconv2.
    MF_CHECK(c.layer_scale_init[s].has_value(), "model '{}': MS-MLP blocks need a layer_scale_init (gamma)", c.name);
    gamma_ = add_child("", std::make_unique<Scale>(dim, static_cast<float>(*c.layer_scale_init[s]), "gamma"));
    MixerOptions o("mix_shift", c.mixers[s].options);
    const auto shifts = o.get_int_list("shifts", {-2, -1, 0, 1, 2});
    const auto kernels = o.get_int_list("kernels", {1, 1, 3, 5, 7});
    o.finish();
    mixer_ = add_child("", std::make_unique<MixShift>(dim, shifts, kernels));
    norm_ = add_child("norm", std::make_unique<Norm>(c.norms[s], dim));
    const auto hidden = static_cast<int64_t>(c.mlp_ratio * static_cast<double>(dim));
    fc1_ = add_child("pwconv1", std::make_unique<Linear>(dim, hidden, c.mlp_bias));
    act_ = add_child("act", make_activation(c.mlp_act));
    fc2_ = add_child("pwconv2", std::make_unique<Linear>(hidden, dim, c.mlp_bias));
  }
  std::string kind() const override { return "MixShiftBlock"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::ScaledResidual); }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor h = fc1_->run_then(ctx, norm_->run(ctx, mixer_->run(ctx, x)), *act_);
    Tensor y = fc2_->run(ctx, h);
    if (ctx.training) saved_branch_ = y;
    return ctx.training ? op::scaled_residual_new(ctx.exec, x, nullptr, y, &gamma_->value())
                        : op::scaled_residual(ctx.exec, x, nullptr, y, &gamma_->value());
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_branch_.defined(), "{}: backward without a training forward", path());
    Parameter* g = gamma_->param();
    Tensor* dgamma = g->trainable && g->grad.defined() ? &g->grad : nullptr;
    // y = x + gamma ⊙ branch; x itself is not needed for these gradients.
    auto [dx, dbranch] = op::scaled_residual_backward(ctx.exec, saved_branch_, nullptr, saved_branch_,
                                                      &gamma_->value(), dy, nullptr, dgamma);
    Tensor d = act_->backward(ctx, fc2_->backward(ctx, dbranch));
    d = mixer_->backward(ctx, norm_->backward(ctx, fc1_->backward(ctx, d)));
    saved_branch_ = Tensor();
    return op::scaled_residual(ctx.exec, dx, nullptr, d, nullptr);
  }

 private:
  Scale* gamma_;
  MixShift* mixer_;
  Norm* norm_;
  Linear* fc1_;
  ActivationLayer* act_;
  Linear* fc2_;
  Tensor saved_branch_;
};

class MsLayer : public Module {
 public:
  MsLayer(const MetaFormerConfig& c, size_t s) {
    blocks_ = add_child("blocks", std::make_unique<Sequential>());
    for (int b = 0; b < c.depths[s]; ++b) blocks_->append(std::make_unique<MixShiftBlock>(c, s));
    if (s + 1 < c.num_stages())
      downsample_ = add_child("downsample", std::make_unique<PatchEmbed>(c.dims[s], c.dims[s + 1], c.downsample, true));
  }
  std::string kind() const override { return "BasicLayer"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor y = blocks_->run(ctx, x);
    return downsample_ ? downsample_->run(ctx, y) : y;
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    return blocks_->backward(ctx, downsample_ ? downsample_->backward(ctx, dy) : dy);
  }

 private:
  Sequential* blocks_;
  PatchEmbed* downsample_ = nullptr;
};

class MsMlpNet : public Module {
 public:
  explicit MsMlpNet(const MetaFormerConfig& c) {
    for (size_t s = 0; s + 1 < c.num_stages(); ++s)
      MF_CHECK(c.dims[s + 1] == 2 * c.dims[s], "model '{}': MS-MLP doubles the width at each stage ({} -> {} given)",
               c.name, c.dims[s], c.dims[s + 1]);
    patch_embed_ = add_child("patch_embed", std::make_unique<PatchEmbed>(c.in_chans, c.dims[0], c.stem, false));
    layers_ = add_child("layers", std::make_unique<Sequential>());
    for (size_t s = 0; s < c.num_stages(); ++s) layers_->append(std::make_unique<MsLayer>(c, s));
    norm_ = add_child("norm", std::make_unique<Norm>(c.head.norm, c.dims.back()));
    head_ = add_child("head", std::make_unique<Linear>(c.dims.back(), c.num_classes, true));
  }
  std::string kind() const override { return "MS_MLP"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::GlobalAvgPool); }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor y = layers_->run(ctx, patch_embed_->run(ctx, x));
    if (ctx.training) saved_shape_ = y.shape();
    return head_->run(ctx, norm_->run(ctx, op::global_avg_pool(ctx.exec, y)));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = op::global_avg_pool_backward(ctx.exec, norm_->backward(ctx, head_->backward(ctx, dy)), saved_shape_);
    return patch_embed_->backward(ctx, layers_->backward(ctx, d));
  }

 private:
  PatchEmbed* patch_embed_;
  Sequential* layers_;
  Norm* norm_;
  Linear* head_;
  Shape saved_shape_;
};

}  // namespace

std::unique_ptr<Module> make_msmlp_net(const MetaFormerConfig& c) { return std::make_unique<MsMlpNet>(c); }

}  // namespace mf
