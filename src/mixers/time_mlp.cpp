// Time mixing (TSMixer, PatchTSMixer): an MLP over the time (or patch) axis, applied to every row of
// the token grid and every channel separately, so that tokens only ever mix with the other tokens of
// their own sequence. On a 1-D model's [B, 1, L, C] grid (docs/sequences.md) that axis is the
// sequence; with channel-independent patching each input channel is its own sequence (its own
// sample), as PatchTSMixer's common_channel mode.
//
//   y = fc2(act(fc1(x)))  over the W tokens of each row, per channel   (PatchTSMixer's PatchMixerBlock
//                                                                       MLP; hidden = ratio · W)
//   y = act(fc1(x))       with "layers": 1                             (TSMixer's time mixing: one
//                                                                       linear map + ReLU)
//   gated: y ⊙ softmax(gate(y)) over the W tokens                      (PatchTSMixer's gated attention)
//
// Keys: fc1.weight [hidden, W], fc1.bias, fc2.weight [W, hidden], fc2.bias, gate.weight [W, W],
// gate.bias (transformers' patch_mixer.mlp.fc1 / .fc2 and patch_mixer.gating_block.attn_layer).
// W is fixed by the nominal sequence length, as token_mlp's N.
#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/activation.h"
#include "nn/token_linear.h"

namespace mf {

namespace {
class TimeMlp : public TokenMixer {
 public:
  TimeMlp(int64_t tokens, int64_t hidden, const std::string& act, int layers, bool gated)
      : tokens_(tokens), hidden_(hidden), gated_(gated) {
    fc1_ = add_child("fc1", std::make_unique<TokenLinear>(tokens, layers == 2 ? hidden : tokens, true));
    act_ = add_child("act", make_activation(act));
    if (layers == 2) fc2_ = add_child("fc2", std::make_unique<TokenLinear>(hidden, tokens, true));
    if (gated) gate_ = add_child("gate", std::make_unique<TokenLinear>(tokens, tokens, true));
  }
  std::string kind() const override { return gated_ ? "GatedTimeMlp" : "TimeMlp"; }
  std::string describe() const override {
    return fmt::format("{} tokens per row{}{}", tokens_, fc2_ ? fmt::format(", hidden {}", hidden_) : "",
                       gated_ ? ", softmax gate" : "");
  }
  void collect_ops(std::set<OpKind>& ops) const override {
    if (gated_) ops.insert(OpKind::SoftmaxGate);
  }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    MF_CHECK(x.ndim() == 4 && x.dim(2) == tokens_, "{}: built for rows of {} tokens (the nominal sequence length), "
             "got {}", path().empty() ? "time_mlp" : path(), tokens_, x.shape().str());
    // Each row of the grid is one sequence: [B, H, W, C] -> [B·H, W, C].
    const Tensor rows = x.reshape({x.dim(0) * x.dim(1), tokens_, x.dim(3)});
    Tensor h = fc1_->run(ctx, rows);
    act_->apply_(ctx, h);
    if (fc2_) h = fc2_->run(ctx, h);
    if (gated_) {
      const Tensor logits = gate_->run(ctx, h);
      if (ctx.training) {
        saved_h_ = h;
        saved_logits_ = logits;
      }
      h = op::softmax_gate(ctx.exec, h, logits);
    }
    return h.reshape(x.shape());
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = dy.reshape({dy.dim(0) * dy.dim(1), tokens_, dy.dim(3)});
    if (gated_) {
      MF_CHECK(saved_h_.defined(), "{}: backward without a training forward", path());
      auto [dh, dlogits] = op::softmax_gate_backward(ctx.exec, saved_h_, saved_logits_, d);
      // h feeds both the gate's logits and the gated product: the two gradients add.
      d = op::scaled_residual(ctx.exec, dh, nullptr, gate_->backward(ctx, dlogits), nullptr);
      saved_h_ = saved_logits_ = Tensor();
    }
    if (fc2_) d = fc2_->backward(ctx, d);
    d = fc1_->backward(ctx, act_->backward(ctx, d));
    return d.reshape(dy.shape());
  }

 private:
  int64_t tokens_, hidden_;
  bool gated_;
  TokenLinear* fc1_;
  ActivationLayer* act_;
  TokenLinear* fc2_ = nullptr;
  TokenLinear* gate_ = nullptr;
  Tensor saved_h_, saved_logits_;
};

std::unique_ptr<TokenMixer> make_time_mlp(const MixerContext& ctx, const char* name, bool gated_default) {
  MixerOptions o(name, ctx.options);
  const int layers = static_cast<int>(o.get_int("layers", 2));
  const double ratio = o.get_double("ratio", 2.0);
  const bool gated = o.get_bool("gated", gated_default);
  const std::string act = o.get_string("act", layers == 1 ? "relu" : "gelu");
  o.finish();
  MF_CHECK(ctx.width > 0, "{} needs the model's nominal sequence length", name);
  MF_CHECK(layers == 1 || layers == 2, "{}: layers must be 1 (TSMixer) or 2 (PatchTSMixer), got {}", name, layers);
  MF_CHECK(ratio > 0 && ratio <= 64, "{}: ratio must be in (0, 64], got {}", name, ratio);
  const auto hidden = static_cast<int64_t>(ratio * static_cast<double>(ctx.width));
  MF_CHECK(hidden >= 1, "{}: hidden width {} (ratio {} of {} tokens) is unusable", name, hidden, ratio, ctx.width);
  return std::make_unique<TimeMlp>(ctx.width, hidden, act, layers, gated);
}
}  // namespace

void register_time_mlp_mixers(MixerRegistry& r) {
  r.add({"time_mlp", "MLP over the time/patch axis of each row, per channel (TSMixer with layers 1, PatchTSMixer)",
         [](const MixerContext& ctx) { return make_time_mlp(ctx, "time_mlp", false); }});
  r.add({"gated_time_mlp", "time_mlp followed by PatchTSMixer's gated attention (a softmax gate over the tokens)",
         [](const MixerContext& ctx) { return make_time_mlp(ctx, "gated_time_mlp", true); }});
}

}  // namespace mf
