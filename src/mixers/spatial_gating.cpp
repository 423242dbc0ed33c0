// gMLP's gated MLP with its spatial gating unit (timm's GatedMlp + SpatialGatingUnit): fc1 expands to
// `hidden` (= ratio · dim) channels, GELU, then the halves (u, v): v is normalised (LayerNorm, eps
// 1e-5: nn.LayerNorm's default, unlike the rest of timm's models) and mixed over the tokens by an
// N × N linear layer; fc2 reads u ⊙ v. Token mixing and channel MLP in one, so in a gMLP block
// ("block": "gmlp") it is the only branch, under the key mlp_channels:
//   fc1 [hidden, dim], gate.norm [hidden/2], gate.proj [N, N] + bias [N], fc2 [dim, hidden/2].
// N is fixed by the stage's token grid at the model's nominal input size.
#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/activation.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/token_linear.h"

namespace mf {

namespace {
// gate.{norm, proj}: v -> proj(norm(v)) over the tokens. gMLP initialises proj near zero with bias
// one, so that the unit starts as u ⊙ 1 (an ordinary MLP).
class SpatialGatingUnit : public Module {
 public:
  SpatialGatingUnit(int64_t channels, int64_t tokens) {
    norm_ = add_child("norm", std::make_unique<Norm>(NormSpec{"layer_norm", 1e-5, true}, channels));
    proj_ = add_child("proj", std::make_unique<TokenLinear>(tokens, tokens, true, Init::trunc_normal(1e-6f),
                                                            Init::ones()));
  }
  std::string kind() const override { return "SpatialGatingUnit"; }
  Tensor forward(Ctx& ctx, const Tensor& v) override {
    return proj_->run(ctx, norm_->run(ctx, v)).reshape(v.shape());
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const int64_t B = dy.dim(0);
    return norm_->backward(ctx, proj_->backward(ctx, dy.reshape({B, dy.shape().rows() / B, dy.shape().last()}))
                                    .reshape(dy.shape()));
  }

 private:
  Norm* norm_;
  TokenLinear* proj_;
};

class SpatialGating : public TokenMixer {
 public:
  SpatialGating(int64_t dim, int64_t hidden, int64_t tokens, const std::string& act) : half_(hidden / 2) {
    fc1_ = add_child("fc1", std::make_unique<Linear>(dim, hidden, true));
    act_ = add_child("act", make_activation(act));
    gate_ = add_child("gate", std::make_unique<SpatialGatingUnit>(half_, tokens));
    fc2_ = add_child("fc2", std::make_unique<Linear>(half_, dim, true));
  }
  std::string kind() const override { return "GatedMlp"; }
  std::string describe() const override { return fmt::format("hidden {}", 2 * half_); }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::ChannelSlice);
    ops.insert(OpKind::Glu);
  }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor t = fc1_->run(ctx, x);
    act_->apply_(ctx, t);
    Tensor gv = gate_->run(ctx, op::channel_slice(ctx.exec, t, half_, half_));
    if (ctx.training) saved_t_ = t, saved_gv_ = gv;
    // u ⊙ gated v: the whole value comes from the gate unit, the "gate" u has no activation.
    return fc2_->run(ctx, op::glu(ctx.exec, t, &gv, 0, 0, half_, Activation{ActKind::Identity}));
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor dz = fc2_->backward(ctx, dy);
    Tensor dgv = Tensor::empty(saved_gv_.shape(), saved_gv_.device(), saved_gv_.dtype());
    Tensor dt = op::glu_backward(ctx.exec, saved_t_, &saved_gv_, 0, 0, Activation{ActKind::Identity}, dz, &dgv);
    op::channel_slice_backward_(ctx.exec, gate_->backward(ctx, dgv), half_, dt);
    saved_t_ = saved_gv_ = Tensor();
    return fc1_->backward(ctx, act_->backward(ctx, dt));
  }

 private:
  int64_t half_;
  Linear* fc1_;
  ActivationLayer* act_;
  SpatialGatingUnit* gate_;
  Linear* fc2_;
  Tensor saved_t_, saved_gv_;
};
}  // namespace

void register_spatial_gating_mixer(MixerRegistry& r) {
  r.add({"spatial_gating", "gMLP's gated MLP: fc1 -> GELU -> u x proj_tokens(norm(v)) -> fc2 (includes the channel MLP)",
         [](const MixerContext& ctx) {
           MixerOptions o("spatial_gating", ctx.options);
           const double ratio = o.get_double("ratio", 6.0);
           const std::string act = o.get_string("act", "gelu");
           o.finish();
           MF_CHECK(ctx.height > 0 && ctx.width > 0, "spatial_gating needs the model's input size");
           const auto hidden = static_cast<int64_t>(ratio * static_cast<double>(ctx.dim));
           MF_CHECK(ratio > 0 && ratio <= 64 && hidden >= 2 && hidden % 2 == 0,
                    "spatial_gating: ratio {} gives hidden width {} (must be even and positive)", ratio, hidden);
           return std::make_unique<SpatialGating>(ctx.dim, hidden, ctx.height * ctx.width, act);
         }});
}

}  // namespace mf
