// AFFNet's adaptive frequency filter (microsoft/TokenMixers, class AFNO2D_channelfirst; spec 8.1):
//   X = rfft2(x) (orthonormal); M = softshrink(W2 · act(W1 · X + b1) + b2) with W1, W2 complex and
//   block-diagonal over `num_blocks` channel groups (a per-frequency, input-dependent filter);
//   y = irfft2(M ⊙ X) + x.
// For a given input the filter is a global circular depthwise convolution whose kernel is the
// inverse transform of M (tests/test_spectral_mixers.cpp checks exactly that).
//
// Parameters as the official code stores them: w1, w2 [2, nb, bs, bs] and b1, b2 [2, nb, bs] (index 0
// real, 1 imaginary; contraction y[o] = Σ_i x[i] W[k, i, o], input index first). In the split spectrum
// layout ([re(C) | im(C)] per frequency bin) a complex block-diagonal layer is one real Linear over
// 2C numbers, with weight [[Wr, -Wi], [Wi, Wr]] (per block, transposed to out × in); the module
// builds that matrix from the parameters at each forward and folds the Linear's weight gradient back.
//
// "aff_bn" is the same filter after its own BatchNorm2d (child "norm"): AFFNet's global branch,
// norm2 (BatchNorm) then the filter, whose skip adds the normalised input. In the generic MetaFormer
// it lets `metaformer compare` name AFF with BatchNorm on (aff_bn) or off (aff).
#include <fmt/format.h>

#include <memory>

#include "mixers/mixer.h"
#include "nn/activation.h"
#include "nn/norm.h"

namespace mf {

namespace {
class AdaptiveFrequencyFilter : public TokenMixer {
 public:
  AdaptiveFrequencyFilter(int64_t dim, int64_t blocks, ActKind act, float threshold, bool batch_norm)
      : dim_(dim), blocks_(blocks), block_size_(dim / blocks), act_(act), threshold_(threshold) {
    const int64_t nb = blocks_, bs = block_size_;
    // The official initialisation: 0.02 · randn.
    w1_ = &add_param("w1", {2, nb, bs, bs}, Init::trunc_normal(0.02f), true);
    b1_ = &add_param("b1", {2, nb, bs}, Init::trunc_normal(0.02f), false);
    w2_ = &add_param("w2", {2, nb, bs, bs}, Init::trunc_normal(0.02f), true);
    b2_ = &add_param("b2", {2, nb, bs}, Init::trunc_normal(0.02f), false);
    if (batch_norm) norm_ = add_child("norm", std::make_unique<Norm>(NormSpec{"batch_norm", 1e-5, true, 0.1}, dim));
  }
  std::string kind() const override { return "AFNO2D"; }
  std::string describe() const override {
    return fmt::format("{}{} channels in {} blocks, {}, softshrink {:g}", norm_ ? "BatchNorm, then " : "", dim_,
                       blocks_, act_name(act_), threshold_);
  }
  void collect_ops(std::set<OpKind>& ops) const override {
    for (OpKind k : {OpKind::Rfft2, OpKind::Irfft2, OpKind::ComplexMul, OpKind::Linear, OpKind::Activation,
                     OpKind::ScaledResidual})
      ops.insert(k);
  }

  Tensor forward(Ctx& ctx, const Tensor& input) override {
    MF_CHECK(input.dim(3) == dim_, "{}: built for {} channels, got {}", path(), dim_, input.dim(3));
    const Tensor x = norm_ ? norm_->run(ctx, input) : input;
    const Tensor spectrum = op::rfft2(ctx.exec, x);  // [B, H, Wf, 2, C]
    const Shape s = spectrum.shape();
    const Tensor bins = spectrum.reshape({s[0] * s[1] * s[2], 2 * dim_});
    Tensor a1 = real_weight(v(w1_)), a2 = real_weight(v(w2_));
    Tensor c1 = real_bias(v(b1_)), c2 = real_bias(v(b2_));
    Tensor pre1 = op::linear(ctx.exec, bins, a1, &c1);
    Tensor o1 = op::activation(ctx.exec, pre1, Activation{act_});
    Tensor pre2 = op::linear(ctx.exec, o1, a2, &c2);
    Tensor mask = op::activation(ctx.exec, pre2, shrink()).reshape(s);
    Tensor filtered = op::irfft2(ctx.exec, op::complex_mul(ctx.exec, mask, spectrum), x.dim(2));
    if (ctx.training) {
      saved_ = {spectrum, a1, a2, pre1, o1, pre2, mask};
      width_ = x.dim(2);
    }
    return op::scaled_residual(ctx.exec, x, nullptr, filtered, nullptr);  // the filter's own skip
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(!saved_.empty(), "{}: backward without a training forward", path());
    const Tensor &spectrum = saved_[0], &a1 = saved_[1], &a2 = saved_[2], &pre1 = saved_[3], &o1 = saved_[4],
                 &pre2 = saved_[5], &mask = saved_[6];
    const Shape s = spectrum.shape();
    const int64_t rows = s[0] * s[1] * s[2];
    Tensor d_filtered = op::irfft2_backward(ctx.exec, dy);
    // ∂/∂X through the product M ⊙ X; ∂/∂M.
    Tensor d_spectrum = zeros_on(s, dy.device());
    Tensor d_mask = op::complex_mul_backward(ctx.exec, mask, spectrum, d_filtered, &d_spectrum);
    Tensor d_pre2 = op::activation_backward(ctx.exec, pre2, shrink(), d_mask.reshape({rows, 2 * dim_}), nullptr);
    // The biases' [2, nb, bs] gradients are already the Linear's [re | im] layout (real_bias), so the
    // products accumulate into them directly; only the weights need folding back.
    Tensor dc2 = bias_grad_view(b2_), dc1 = bias_grad_view(b1_);
    Tensor da2 = zeros_on(a2.shape(), dy.device());
    Tensor d_o1 = op::linear_backward(ctx.exec, o1, a2, d_pre2, true, &da2, dc2.defined() ? &dc2 : nullptr);
    Tensor d_pre1 = op::activation_backward(ctx.exec, pre1, Activation{act_}, d_o1, nullptr);
    Tensor da1 = zeros_on(a1.shape(), dy.device());
    const Tensor bins = spectrum.reshape({rows, 2 * dim_});
    Tensor d_bins = op::linear_backward(ctx.exec, bins, a1, d_pre1, true, &da1, dc1.defined() ? &dc1 : nullptr);
    fold_weight_grad(da1, grad_of(w1_));
    fold_weight_grad(da2, grad_of(w2_));
    // ∂/∂X through the mask's input too, then back to the image; plus the skip.
    d_spectrum = op::scaled_residual(ctx.exec, d_spectrum, nullptr, d_bins.reshape(s), nullptr);
    Tensor dx = op::rfft2_backward(ctx.exec, d_spectrum, width_);
    saved_.clear();
    Tensor d_in = op::scaled_residual(ctx.exec, dy, nullptr, dx, nullptr);
    return norm_ ? norm_->backward(ctx, d_in) : d_in;
  }

 private:
  Activation shrink() const {
    Activation a{ActKind::SoftShrink};
    a.threshold = threshold_;
    return a;
  }
  // [2, nb, bs, bs] -> the real [2C, 2C] Linear weight (out × in) of the complex block-diagonal layer,
  // built on the host (nn/module.h, add_on_host) and placed where the parameter lives (a GPU run
  // keeps the parameters on the GPU; inference keeps them on the host and the backend uploads).
  // Cached on the parameter until it changes (Tensor::derived): inference builds it once, and the
  // backend then keeps its own upload of it; training rebuilds it after every optimizer step.
  Tensor real_weight(const Tensor& w) const {
    if (auto cached = w.derived("aff_real_weight")) return *std::static_pointer_cast<Tensor>(cached);
    const int64_t C = dim_, nb = blocks_, bs = block_size_;
    Tensor a = Tensor::zeros({2 * C, 2 * C});
    float* A = a.data();
    const Tensor host = w.to(Device::CPU);
    const float* W = host.data();
    for (int64_t k = 0; k < nb; ++k)
      for (int64_t i = 0; i < bs; ++i)
        for (int64_t o = 0; o < bs; ++o) {
          const float re = W[((0 * nb + k) * bs + i) * bs + o], im = W[((1 * nb + k) * bs + i) * bs + o];
          const int64_t in = k * bs + i, out = k * bs + o;
          A[out * 2 * C + in] = re;             // re <- re
          A[out * 2 * C + C + in] = -im;        // re <- im
          A[(C + out) * 2 * C + in] = im;       // im <- re
          A[(C + out) * 2 * C + C + in] = re;   // im <- im
        }
    auto placed = std::make_shared<Tensor>(a.to(w.device()));
    w.set_derived("aff_real_weight", placed);
    return *placed;
  }
  Tensor real_bias(const Tensor& b) const { return b.reshape({2 * dim_}); }  // [re | im] per channel
  // The bias's gradient seen as the Linear's [2C] bias gradient (no tensor when it has none).
  Tensor bias_grad_view(Parameter* b) {
    Tensor* g = grad_of(b);
    return g ? g->reshape({2 * dim_}) : Tensor();
  }
  void fold_weight_grad(const Tensor& da, Tensor* dw) const {
    if (!dw) return;
    const int64_t C = dim_, nb = blocks_, bs = block_size_;
    const Tensor host = da.to(Device::CPU);
    const float* D = host.data();
    add_on_host(*dw, [&](float* g) {
      for (int64_t k = 0; k < nb; ++k)
        for (int64_t i = 0; i < bs; ++i)
          for (int64_t o = 0; o < bs; ++o) {
            const int64_t in = k * bs + i, out = k * bs + o;
            g[((0 * nb + k) * bs + i) * bs + o] += D[out * 2 * C + in] + D[(C + out) * 2 * C + C + in];
            g[((1 * nb + k) * bs + i) * bs + o] += -D[out * 2 * C + C + in] + D[(C + out) * 2 * C + in];
          }
    });
  }

  int64_t dim_, blocks_, block_size_;
  ActKind act_;
  float threshold_;
  Parameter *w1_, *b1_, *w2_, *b2_;
  Norm* norm_ = nullptr;
  std::vector<Tensor> saved_;
  int64_t width_ = 0;
};
}  // namespace

namespace {
std::unique_ptr<TokenMixer> make_aff(const MixerContext& ctx, const char* name, bool batch_norm) {
  MixerOptions o(name, ctx.options);
  const int64_t blocks = o.get_int("num_blocks", 8);
  const std::string act = o.get_string("act", "relu");
  const double threshold = o.get_double("sparsity_threshold", 0.01);
  o.finish();
  MF_CHECK(blocks >= 1 && ctx.dim % blocks == 0, "{}: {} channels do not split into {} blocks", name, ctx.dim, blocks);
  MF_CHECK(threshold >= 0, "{}: sparsity_threshold must be >= 0", name);
  return std::make_unique<AdaptiveFrequencyFilter>(ctx.dim, blocks, parse_activation(act),
                                                   static_cast<float>(threshold), batch_norm);
}
}  // namespace

void register_aff_mixer(MixerRegistry& r) {
  r.add({"aff", "adaptive frequency filter: rfft2 -> input-dependent complex mask (grouped complex MLP, "
                "softshrink) -> irfft2, plus skip (AFFNet)",
         [](const MixerContext& ctx) { return make_aff(ctx, "aff", false); }});
  r.add({"aff_bn", "AFFNet's global branch: BatchNorm2d, then the adaptive frequency filter (as aff)",
         [](const MixerContext& ctx) { return make_aff(ctx, "aff_bn", true); }});
}

}  // namespace mf
