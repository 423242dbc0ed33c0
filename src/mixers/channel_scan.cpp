// MambaMixer's selective channel mixing ("MambaMixer: Efficient Selective State Space Models with Dual
// Token and Channel Selection", Behrouz et al. 2024) as a channel mixer that can replace the block's
// MLP: `"mlp": {"mixer": {"type": "channel_scan", ...}}` (docs/sequences.md). Each token's C channels
// are read as a sequence of C scalars and mixed by a bidirectional selective scan over that sequence
// (MambaMixer scans the channels both ways, as channels have no order of their own): the `hydra`
// mixer's forward + backward scans with shared projections, built at width 1, whose options it takes
// (`d_inner` 16, `d_state` 8, `d_conv` 3 unless given). Every token is scanned independently, so it
// works at any sequence length and on any grid. (MambaMixer's own channel mixer treats each channel's
// values at all tokens as that channel's feature vector, which ties its width to the token count.)
// As a mixer it maps [B, H, W, C] to the same shape, so it is registered like the token mixers and
// checked by the same gradient tests; in the token-mixer slot it would mix channels only.
#include <fmt/format.h>

#include "mixers/mixer.h"

namespace mf {

namespace {

class ChannelScan : public TokenMixer {
 public:
  explicit ChannelScan(std::unique_ptr<TokenMixer> scan) { scan_ = add_child("scan", std::move(scan)); }
  std::string kind() const override { return "ChannelScan"; }
  std::string describe() const override { return "a bidirectional selective scan over each token's channels"; }
  // x [B, H, W, C]: B·H·W sequences of C tokens of width 1 (the same memory).
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    return scan_->run(ctx, x.reshape({x.dim(0) * x.dim(1) * x.dim(2), 1, x.dim(3), 1})).reshape(x.shape());
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    return scan_->backward(ctx, dy.reshape({dy.dim(0) * dy.dim(1) * dy.dim(2), 1, dy.dim(3), 1})).reshape(dy.shape());
  }

 private:
  TokenMixer* scan_;
};

}  // namespace

void register_channel_scan_mixer(MixerRegistry& r) {
  r.add({"channel_scan", "MambaMixer's channel scan: a bidirectional selective scan over each token's channels "
         "(a channel mixer for \"mlp\": {\"mixer\": ...})",
         [](const MixerContext& ctx) {
           MF_CHECK(ctx.options.is_object(), "options of mixer 'channel_scan' must be a JSON object");
           nlohmann::json inner = ctx.options;
           inner.erase("type");
           if (!inner.contains("d_inner") && !inner.contains("expand")) inner["d_inner"] = 16;
           if (!inner.contains("d_state")) inner["d_state"] = 8;
           if (!inner.contains("d_conv")) inner["d_conv"] = 3;
           MixerContext one{1, ctx.stage, 1, ctx.dim, inner};
           return std::make_unique<ChannelScan>(MixerRegistry::get().create("hydra", one));
         }});
}

}  // namespace mf
