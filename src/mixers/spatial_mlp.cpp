// A learned dense linear map over the tokens, shared by all channels: y[b] = W · x[b] + bias, W
// [N, N]. ResMLP's cross-patch sublayer (timm's `linear_tokens`, keys weight and bias directly in the
// mixer), the linear core of every spatial MLP. N is fixed by the stage's token grid at the model's
// nominal input size.
#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/token_linear.h"

namespace mf {

namespace {
class SpatialMlp : public TokenMixer {
 public:
  explicit SpatialMlp(int64_t tokens) {
    // Its parameters are the mixer's own (linear_tokens.weight), hence the unnamed child.
    linear_ = add_child("", std::make_unique<TokenLinear>(tokens, tokens, true));
  }
  std::string kind() const override { return "SpatialMlp"; }
  std::string describe() const override { return fmt::format("{} tokens", linear_->in_tokens()); }
  Tensor forward(Ctx& ctx, const Tensor& x) override { return linear_->forward(ctx, x).reshape(x.shape()); }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const int64_t B = dy.dim(0);
    return linear_->backward(ctx, dy.reshape({B, dy.shape().rows() / B, dy.shape().last()})).reshape(dy.shape());
  }

 private:
  TokenLinear* linear_;
};
}  // namespace

void register_spatial_mlp_mixer(MixerRegistry& r) {
  r.add({"spatial_mlp", "learned N x N linear map over the tokens plus a bias (ResMLP's cross-patch layer)",
         [](const MixerContext& ctx) {
           MixerOptions("spatial_mlp", ctx.options).finish();
           MF_CHECK(ctx.height > 0 && ctx.width > 0, "spatial_mlp needs the model's input size");
           return std::make_unique<SpatialMlp>(ctx.height * ctx.width);
         }});
}

}  // namespace mf
