// ConvFormer's mixer, the inverted separable convolution of MobileNetV2: pointwise expansion (×2),
// StarReLU, depthwise 7×7, pointwise projection; no biases. Keys: pwconv1, act1, dwconv, act2, pwconv2
// (timm builds the pointwise layers as 1×1 convolutions, hence weights [out, in, 1, 1]).
#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace mf {

namespace {
class SepConv : public TokenMixer {
 public:
  SepConv(int64_t dim, double expansion, int kernel, const std::string& act1, const std::string& act2, bool bias) {
    const auto mid = static_cast<int64_t>(expansion * static_cast<double>(dim));
    pw1_ = add_child("pwconv1", std::make_unique<Linear>(dim, mid, bias, true));
    act1_ = add_child("act1", make_activation(act1));
    dw_ = add_child("dwconv", std::make_unique<DepthwiseConv2d>(mid, kernel, kernel / 2, bias));
    act2_ = add_child("act2", make_activation(act2));
    pw2_ = add_child("pwconv2", std::make_unique<Linear>(mid, dim, bias, true));
  }
  std::string kind() const override { return "SepConv"; }

  Tensor forward(Ctx& ctx, const Tensor& x) override { return mix(ctx, x, nullptr); }
  Tensor run_residual_train(Ctx& ctx, const Tensor& n, const Tensor& skip) override {
    return ctx.training ? mix(ctx, n, &skip) : Tensor();
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = act2_->backward(ctx, pw2_->backward(ctx, dy));
    if (fused_) return pw1_->backward(ctx, dw_->backward_through(ctx, d, *act1_));
    return pw1_->backward(ctx, act1_->backward(ctx, dw_->backward(ctx, d)));
  }

  // Inference with a LayerNorm or GroupNorm in front: the norm, the mixer and the residual as one op.
  Tensor run_branch(Ctx& ctx, const Tensor& x, Norm& norm, const BranchScales& scales) override {
    const std::optional<BranchNorm> bn = norm.as_branch_norm();
    if (ctx.training || !bn || act2_->params().kind != ActKind::Identity || x.ndim() != 4)
      return TokenMixer::run_branch(ctx, x, norm, scales);
    return op::sepconv_branch(ctx.exec, x, *bn, v(pw1_->weight()), opt(pw1_->bias()), act1_->params(), v(dw_->weight()),
                              opt(dw_->bias()), dw_->geometry(), v(pw2_->weight()), opt(pw2_->bias()), scales);
  }

 private:
  // The mixer's output, or skip + it (skip not null: training's fused residual, run_residual_train).
  Tensor mix(Ctx& ctx, const Tensor& x, const Tensor* skip) {
    if (!ctx.training && act2_->params().kind == ActKind::Identity)  // inference: dwconv → pwconv2 fused
      return op::depthwise_linear(ctx.exec, pw1_->run_then(ctx, x, *act1_), v(dw_->weight()), opt(dw_->bias()),
                                  dw_->geometry(), v(pw2_->weight()), opt(pw2_->bias()));
    // Training where the backend applies act1 as the depthwise convolution stages its input
    // (Backend::fuses_act_into_depthwise): pwconv1's output, the pre-activation, is the only 2x-wide
    // tensor written and kept; act1's output is never written. Elsewhere the separate layers.
    if (ctx.training)
      fused_ = act2_->params().kind == ActKind::Identity && act1_->params().kind != ActKind::Identity &&
               ctx.exec.backend->fuses_act_into_depthwise();
    Tensor h = ctx.training && fused_ ? dw_->run_act_train(ctx, pw1_->run(ctx, x), *act1_)
                                      : dw_->run(ctx, pw1_->run_then(ctx, x, *act1_));
    act2_->apply_(ctx, h);
    return skip ? pw2_->run_residual_train(ctx, h, *skip) : pw2_->run(ctx, h);
  }

  Linear* pw1_;
  ActivationLayer* act1_;
  DepthwiseConv2d* dw_;
  ActivationLayer* act2_;
  Linear* pw2_;
  bool fused_ = false;  // the last training forward ran act1 and dwconv as one op (run_act_train)
};
}  // namespace

void register_sepconv_mixer(MixerRegistry& r) {
  r.add({"sepconv", "pointwise x2 -> StarReLU -> depthwise 7x7 -> pointwise (ConvFormer)",
         [](const MixerContext& ctx) {
           MixerOptions o("sepconv", ctx.options);
           const double expansion = o.get_double("expansion_ratio", 2.0);
           const int64_t k = o.get_int("kernel_size", 7);
           const std::string act1 = o.get_string("act1", "starrelu");
           const std::string act2 = o.get_string("act2", "identity");
           const bool bias = o.get_bool("bias", false);
           o.finish();
           MF_CHECK(k >= 1 && k % 2 == 1 && k <= 31, "sepconv: kernel_size must be odd and in 1..31, got {}", k);
           MF_CHECK(expansion > 0 && expansion <= 16, "sepconv: expansion_ratio must be in (0, 16], got {}",
                    expansion);
           return std::make_unique<SepConv>(ctx.dim, expansion, static_cast<int>(k), act1, act2, bias);
         }});
}

}  // namespace mf
