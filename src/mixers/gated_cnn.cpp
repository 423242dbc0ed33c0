// MambaOut's gated CNN (timm's GatedConvBlock without its norm, residual and layer scale, which the
// block around it provides): fc1 expands to 2·hidden channels, split in order into a gate g
// (hidden), an identity part i (hidden - conv_ch) and a conv part c (conv_ch); the conv part goes
// through a depthwise k×k convolution, and fc2 reads act(g) ⊙ concat(i, conv(c)).
//
// In a MambaOut block ("block": "mambaout") this mixer is the block's only branch and its layers
// sit directly in the block (keys blocks.{b}.fc1, .conv, .fc2); in a MetaFormer block it is an
// ordinary token mixer (token_mixer.fc1, ...) followed by the channel MLP.
#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace mf {

namespace {
class GatedCnn : public TokenMixer {
 public:
  GatedCnn(int64_t dim, int64_t hidden, int64_t conv_ch, int kernel, const std::string& act)
      : hidden_(hidden), conv_ch_(conv_ch), act_(parse_activation(act)) {
    fc1_ = add_child("fc1", std::make_unique<Linear>(dim, 2 * hidden, true));
    conv_ = add_child("conv", std::make_unique<DepthwiseConv2d>(conv_ch, kernel, kernel / 2, true));
    fc2_ = add_child("fc2", std::make_unique<Linear>(hidden, dim, true));
  }
  std::string kind() const override { return "GatedCNN"; }
  std::string describe() const override {
    return fmt::format("hidden {}, conv on {} channels, {}", hidden_, conv_ch_, act_name(act_));
  }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::ChannelSlice);
    ops.insert(OpKind::Glu);
  }

  Tensor forward(Ctx& ctx, const Tensor& x) override { return mix(ctx, x, nullptr); }
  Tensor run_residual_train(Ctx& ctx, const Tensor& n, const Tensor& skip) override {
    return ctx.training ? mix(ctx, n, &skip) : Tensor();
  }

  // Inference with a LayerNorm or GroupNorm in front: the whole block as one op.
  Tensor run_branch(Ctx& ctx, const Tensor& x, Norm& norm, const BranchScales& scales) override {
    const std::optional<BranchNorm> bn = norm.as_branch_norm();
    if (ctx.training || !bn || x.ndim() != 4) return TokenMixer::run_branch(ctx, x, norm, scales);
    return op::gated_cnn_branch(ctx.exec, x, *bn, v(fc1_->weight()), opt(fc1_->bias()), hidden_, v(conv_->weight()),
                                opt(conv_->bias()), conv_->geometry(), Activation{act_}, v(fc2_->weight()),
                                opt(fc2_->bias()), scales);
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor dz = fc2_->backward(ctx, dy);
    if (sliced_) {
      Tensor dt = op::gated_conv_backward(ctx.exec, saved_t_, saved_c_, hidden_, conv_offset(), Activation{act_},
                                          v(conv_->weight()), conv_->geometry(), dz, grad_of(conv_->weight()),
                                          grad_of(conv_->bias()));
      saved_t_ = saved_c_ = Tensor();
      return fc1_->backward(ctx, dt);
    }
    Tensor dc = Tensor::empty(saved_c_.shape(), saved_c_.device(), saved_c_.dtype());
    Tensor dt = op::glu_backward(ctx.exec, saved_t_, &saved_c_, 0, hidden_, Activation{act_}, dz, &dc);
    op::channel_slice_backward_(ctx.exec, conv_->backward(ctx, dc), conv_offset(), dt);
    saved_t_ = saved_c_ = Tensor();
    return fc1_->backward(ctx, dt);
  }

 private:
  // The mixer's output, or skip + it (skip not null: training's fused residual, run_residual_train).
  Tensor mix(Ctx& ctx, const Tensor& x, const Tensor* skip) {
    Tensor t = fc1_->run(ctx, x);
    // Training where the backend convolves channel slices: the conv part is read where fc1 wrote it
    // and its gradient written where dt holds it (no copies; not with ctx.on_output, which reports
    // the conv's own output).
    if (ctx.training)
      sliced_ = t.ndim() == 4 && !ctx.on_output && ctx.exec.backend->convolves_channel_slices() &&
                conv_->geometry().out_h(t.dim(1)) == t.dim(1) && conv_->geometry().out_w(t.dim(2)) == t.dim(2);
    Tensor c = ctx.training && sliced_
                   ? op::depthwise_conv2d_slice(ctx.exec, t, conv_offset(), v(conv_->weight()), opt(conv_->bias()),
                                                conv_->geometry())
                   : conv_->run(ctx, op::channel_slice(ctx.exec, t, conv_offset(), conv_ch_));
    if (!ctx.training)  // inference: the gated product goes straight into fc2 (one op)
      return op::glu_linear(ctx.exec, t, &c, 0, hidden_, hidden_, Activation{act_}, v(fc2_->weight()),
                            opt(fc2_->bias()));
    saved_t_ = t, saved_c_ = c;
    Tensor g = op::glu(ctx.exec, t, &c, 0, hidden_, hidden_, Activation{act_});
    return skip ? fc2_->run_residual_train(ctx, g, *skip) : fc2_->run(ctx, g);
  }

  int64_t hidden_, conv_ch_;
  ActKind act_;
  Linear* fc1_;
  DepthwiseConv2d* conv_;
  Linear* fc2_;
  Tensor saved_t_, saved_c_;
  bool sliced_ = false;  // the last training forward convolved t's slice in place (depthwise_conv2d_slice)
  int64_t conv_offset() const { return 2 * hidden_ - conv_ch_; }
};
}  // namespace

void register_gated_cnn_mixer(MixerRegistry& r) {
  r.add({"gated_cnn", "act(gate) x [identity part, depthwise 7x7 part] between two linears (MambaOut)",
         [](const MixerContext& ctx) {
           MixerOptions o("gated_cnn", ctx.options);
           const double ratio = o.get_double("expansion_ratio", 8.0 / 3.0);
           const double conv_ratio = o.get_double("conv_ratio", 1.0);
           const int64_t k = o.get_int("kernel_size", 7);
           const std::string act = o.get_string("act", "gelu");
           o.finish();
           MF_CHECK(k >= 1 && k % 2 == 1 && k <= 31, "gated_cnn: kernel_size must be odd and in 1..31, got {}", k);
           MF_CHECK(ratio > 0 && ratio <= 16, "gated_cnn: expansion_ratio must be in (0, 16], got {}", ratio);
           // timm: Python int() of the float products (8/3 · 128 = 341).
           const auto hidden = static_cast<int64_t>(ratio * static_cast<double>(ctx.dim));
           const auto conv_ch = static_cast<int64_t>(conv_ratio * static_cast<double>(ctx.dim));
           MF_CHECK(hidden >= 1 && conv_ch >= 1 && conv_ch <= hidden,
                    "gated_cnn: conv_ratio {} gives {} conv channels for a hidden width of {} (need 1..hidden)",
                    conv_ratio, conv_ch, hidden);
           return std::make_unique<GatedCnn>(ctx.dim, hidden, conv_ch, static_cast<int>(k), act);
         }});
}

}  // namespace mf
