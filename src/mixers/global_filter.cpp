// GFNet's global filter: y = irfft2(K ⊙ rfft2(x)), a learned complex filter K per channel and
// frequency — a circular depthwise convolution whose kernel is as large as the feature map, in
// O(N log N). K (`complex_weight`, [H, W/2+1, 2, C]: real parts then imaginary parts) is tied to the
// stage's token grid at the model's nominal input size; GFNet initialises it with std 0.02.
#include <fmt/format.h>

#include "mixers/mixer.h"

namespace mf {

namespace {
class GlobalFilter : public TokenMixer {
 public:
  GlobalFilter(int64_t dim, int64_t height, int64_t width) : height_(height), width_(width) {
    filter_ = &add_param("complex_weight", {height, width / 2 + 1, 2, dim}, Init::trunc_normal(0.02f), true);
  }
  std::string kind() const override { return "GlobalFilter"; }
  std::string describe() const override { return fmt::format("{}x{} tokens", height_, width_); }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::Rfft2);
    ops.insert(OpKind::Irfft2);
    ops.insert(OpKind::ComplexMul);
  }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    MF_CHECK(x.dim(1) == height_ && x.dim(2) == width_,
             "{}: the global filter was built for a {}x{} token grid and cannot filter {}x{}", path(), height_, width_,
             x.dim(1), x.dim(2));
    Tensor spectrum = op::rfft2(ctx.exec, x);
    if (ctx.training) saved_spectrum_ = spectrum;
    return op::irfft2(ctx.exec, op::complex_mul(ctx.exec, spectrum, v(filter_)), width_);
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = op::irfft2_backward(ctx.exec, dy);
    d = op::complex_mul_backward(ctx.exec, saved_spectrum_, v(filter_), d, grad_of(filter_));
    saved_spectrum_ = Tensor();
    return op::rfft2_backward(ctx.exec, d, width_);
  }

 private:
  int64_t height_, width_;
  Parameter* filter_;
  Tensor saved_spectrum_;
};
}  // namespace

void register_global_filter_mixer(MixerRegistry& r) {
  r.add({"global_filter", "rfft2 -> learned complex filter per channel -> irfft2 (GFNet)", [](const MixerContext& ctx) {
           MixerOptions("global_filter", ctx.options).finish();
           MF_CHECK(ctx.height > 0 && ctx.width > 0, "global_filter needs the model's input size");
           return std::make_unique<GlobalFilter>(ctx.dim, ctx.height, ctx.width);
         }});
}

}  // namespace mf
