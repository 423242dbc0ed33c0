// MLP-Mixer's token-mixing MLP: an MLP over the tokens, shared by all channels — fc1 maps the N
// tokens to `hidden` (= ratio · dim, timm's int(0.5 · dim)), GELU, fc2 maps back to N. With `glu`
// (gMixer) fc1's output is split in halves along the hidden tokens and fc2 reads x1 ⊙ SiLU(x2).
// Keys fc1.weight [hidden, N], fc1.bias, fc2.weight [N, hidden'], fc2.bias as timm's Mlp/GluMlp.
// N is fixed by the stage's token grid at the model's nominal input size.
#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/activation.h"
#include "nn/token_linear.h"

namespace mf {

namespace {
class TokenMlp : public TokenMixer {
 public:
  TokenMlp(int64_t tokens, int64_t hidden, const std::string& act, bool glu) : hidden_(hidden), glu_(glu) {
    fc1_ = add_child("fc1", std::make_unique<TokenLinear>(tokens, hidden, true));
    act_ = add_child("act", make_activation(act));
    fc2_ = add_child("fc2", std::make_unique<TokenLinear>(glu ? hidden / 2 : hidden, tokens, true));
  }
  std::string kind() const override { return glu_ ? "GluMlp" : "Mlp"; }
  std::string describe() const override { return fmt::format("{} tokens, hidden {}", fc1_->in_tokens(), hidden_); }
  void collect_ops(std::set<OpKind>& ops) const override {
    if (glu_) ops.insert(OpKind::Glu);
  }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor h = fc1_->run(ctx, x);  // [B, hidden, C]
    if (glu_) {
      // The halves are along the hidden tokens: view each sample as [2, hidden/2 · C].
      const int64_t half = hidden_ / 2 * h.dim(2);
      Tensor flat = h.reshape({h.dim(0), 2 * half});
      if (ctx.training) saved_h_ = flat;
      h = op::glu(ctx.exec, flat, nullptr, half, 0, half, act_->params()).reshape({h.dim(0), hidden_ / 2, h.dim(2)});
    } else {
      act_->apply_(ctx, h);
    }
    return fc2_->run(ctx, h).reshape(x.shape());
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const int64_t B = dy.dim(0), C = dy.shape().last();
    Tensor d = fc2_->backward(ctx, dy.reshape({B, dy.shape().rows() / B, C}));
    if (glu_) {
      const int64_t half = hidden_ / 2 * C;
      d = op::glu_backward(ctx.exec, saved_h_, nullptr, half, 0, act_->params(), d.reshape({B, half}), nullptr)
              .reshape({B, hidden_, C});
      saved_h_ = Tensor();
    } else {
      d = act_->backward(ctx, d);
    }
    return fc1_->backward(ctx, d).reshape(dy.shape());
  }

 private:
  int64_t hidden_;
  bool glu_;
  TokenLinear* fc1_;
  ActivationLayer* act_;
  TokenLinear* fc2_;
  Tensor saved_h_;
};
}  // namespace

void register_token_mlp_mixer(MixerRegistry& r) {
  r.add({"token_mlp", "MLP over the tokens: fc1 -> GELU -> fc2, or gated with glu (MLP-Mixer, gMixer)",
         [](const MixerContext& ctx) {
           MixerOptions o("token_mlp", ctx.options);
           const double ratio = o.get_double("ratio", 0.5);
           const bool glu = o.get_bool("glu", false);
           const std::string act = o.get_string("act", glu ? "silu" : "gelu");
           o.finish();
           MF_CHECK(ctx.height > 0 && ctx.width > 0, "token_mlp needs the model's input size");
           MF_CHECK(ratio > 0 && ratio <= 64, "token_mlp: ratio must be in (0, 64], got {}", ratio);
           const auto hidden = static_cast<int64_t>(ratio * static_cast<double>(ctx.dim));
           MF_CHECK(hidden >= (glu ? 2 : 1) && (!glu || hidden % 2 == 0),
                    "token_mlp: hidden width {} (ratio {} of {}) is unusable{}", hidden, ratio, ctx.dim,
                    glu ? " (glu needs an even width)" : "");
           return std::make_unique<TokenMlp>(ctx.height * ctx.width, hidden, act, glu);
         }});
}

}  // namespace mf
