// RandFormer's mixer: a frozen random N×N matrix over the tokens, y[b] = R · x[b], with each row of R
// the softmax of U[0, 1) draws. R is saved with the weights (key `random_matrix`) but never trained.
// N is fixed by the stage's token grid at the model's nominal input size (196 or 49 at 224×224).
#include <fmt/format.h>

#include "mixers/mixer.h"

namespace mf {

namespace {
class RandomMixing : public TokenMixer {
 public:
  RandomMixing(int64_t height, int64_t width) : height_(height), width_(width) {
    const int64_t n = height * width;
    Parameter& p = add_param("random_matrix", {n, n}, Init::row_softmax_uniform(), false);
    p.trainable = false;
    matrix_ = &p;
  }
  std::string kind() const override { return "RandomMixing"; }
  std::string describe() const override { return fmt::format("{} tokens ({}x{})", height_ * width_, height_, width_); }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::TokenMix); }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
    MF_CHECK(H * W == height_ * width_,
             "the random mixer was built for a {}x{} token grid ({} tokens) and cannot mix {}x{}; RandFormer "
             "models accept only their nominal input size",
             height_, width_, height_ * width_, H, W);
    if (ctx.training) saved_x_ = x.reshape({B, H * W, C});
    return op::token_mix(ctx.exec, v(matrix_), x.reshape({B, H * W, C})).reshape(x.shape());
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const int64_t B = dy.dim(0), N = dy.dim(1) * dy.dim(2), C = dy.dim(3);
    // The matrix is frozen (as in the paper): only the input's gradient is needed.
    Tensor dx = op::token_mix_backward(ctx.exec, v(matrix_), saved_x_, dy.reshape({B, N, C}), grad_of(matrix_));
    saved_x_ = Tensor();
    return dx.reshape(dy.shape());
  }

 private:
  int64_t height_, width_;
  Parameter* matrix_;
  Tensor saved_x_;
};
}  // namespace

void register_random_mixer(MixerRegistry& r) {
  r.add({"random", "frozen random token matrix, rows softmax-normalised (RandFormer)", [](const MixerContext& ctx) {
           MixerOptions("random", ctx.options).finish();
           MF_CHECK(ctx.height > 0 && ctx.width > 0, "the random mixer needs the model's input size");
           return std::make_unique<RandomMixing>(ctx.height, ctx.width);
         }});
}

}  // namespace mf
