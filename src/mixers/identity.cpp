// IdentityFormer's mixer: no token mixing at all, y = x. With it the block's first branch adds
// norm1(x) back to x; the MetaFormer Baselines paper uses it to measure what the block alone does.
#include "mixers/mixer.h"

namespace mf {

namespace {
class IdentityMixer : public TokenMixer {
 public:
  std::string kind() const override { return "Identity"; }
  Tensor forward(Ctx&, const Tensor& x) override { return x; }
  Tensor backward(Ctx&, const Tensor& dy) override { return dy; }
};
}  // namespace

void register_identity_mixer(MixerRegistry& r) {
  r.add({"identity", "no mixing: y = x (IdentityFormer)", [](const MixerContext& ctx) {
           MixerOptions("identity", ctx.options).finish();
           return std::make_unique<IdentityMixer>();
         }});
}

}  // namespace mf
