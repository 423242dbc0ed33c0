// WaveMix's token mixing, in a linear form: a one-level orthonormal 2-D Haar wavelet transform (the
// four sub-bands LL, LH, HL, HH at half resolution, lossless), a learned 4 × 4 mixing of the sub-bands
// plus a bias per sub-band (shared by all channels and positions), and the inverse transform. Keys
// weight [4, 4] (initialised to the identity, so the mixer starts as the identity map) and bias [4].
// Any size: odd maps are zero-padded by the transform and cropped by its inverse.
#include "mixers/mixer.h"
#include "nn/token_linear.h"

namespace mf {

namespace {
class Wavelet : public TokenMixer {
 public:
  Wavelet() {
    // The sub-band mixing is a 4 -> 4 "token" map over the band axis of [B·h·w, 4, C].
    mix_ = add_child("", std::make_unique<TokenLinear>(4, 4, true, Init::identity(), Init::zeros()));
  }
  std::string kind() const override { return "Wavelet"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::Haar2d); }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor bands = op::haar2d(ctx.exec, x);  // [B, h, w, 4, C]
    const Shape s = bands.shape();
    Tensor mixed = mix_->run(ctx, bands.reshape({s[0] * s[1] * s[2], 4, s[4]})).reshape(s);
    if (ctx.training) height_ = x.dim(1), width_ = x.dim(2);
    return op::haar2d_inverse(ctx.exec, mixed, x.dim(1), x.dim(2));
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = op::haar2d(ctx.exec, dy);  // the inverse transform's adjoint is the forward one
    const Shape s = d.shape();
    d = mix_->backward(ctx, d.reshape({s[0] * s[1] * s[2], 4, s[4]})).reshape(s);
    return op::haar2d_inverse(ctx.exec, d, height_, width_);  // and vice versa
  }

 private:
  TokenLinear* mix_;
  int64_t height_ = 0, width_ = 0;
};
}  // namespace

void register_wavelet_mixer(MixerRegistry& r) {
  r.add({"wavelet", "Haar DWT -> learned 4x4 sub-band mixing -> inverse DWT (WaveMix's token mixing, linear)",
         [](const MixerContext& ctx) {
           MixerOptions("wavelet", ctx.options).finish();
           return std::make_unique<Wavelet>();
         }});
}

}  // namespace mf
