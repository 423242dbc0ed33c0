// The axial token mixing of RaftMLP, in its linear form: a learned map over the rows (H × H, shared by
// every column and channel) followed by one over the columns (W × W); each with a bias. O(N^1.5)
// instead of a dense N × N map. Keys vertical.{weight, bias}, horizontal.{weight, bias}. Tied to the
// stage's token grid at the model's nominal input size. (RaftMLP also groups channels into "rafts"
// that its token MLPs mix jointly; here every channel shares the maps — the channel MLP of the block
// does the channel mixing.)
#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/token_linear.h"

namespace mf {

namespace {
class AxialMlp : public TokenMixer {
 public:
  AxialMlp(int64_t height, int64_t width) : height_(height), width_(width) {
    vertical_ = add_child("vertical", std::make_unique<TokenLinear>(height, height, true));
    horizontal_ = add_child("horizontal", std::make_unique<TokenLinear>(width, width, true));
  }
  std::string kind() const override { return "AxialMlp"; }
  std::string describe() const override { return fmt::format("{}x{} tokens", height_, width_); }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    MF_CHECK(x.dim(1) == height_ && x.dim(2) == width_,
             "{}: the axial MLP was built for a {}x{} token grid and cannot mix {}x{}", path(), height_, width_,
             x.dim(1), x.dim(2));
    const int64_t B = x.dim(0), C = x.dim(3);
    // Rows: [B, H, W·C]; columns: [B·H, W, C].
    Tensor v = vertical_->run(ctx, x.reshape({B, height_, width_ * C}));
    return horizontal_->run(ctx, v.reshape({B * height_, width_, C})).reshape(x.shape());
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const int64_t B = dy.dim(0), C = dy.dim(3);
    Tensor d = horizontal_->backward(ctx, dy.reshape({B * height_, width_, C}));
    return vertical_->backward(ctx, d.reshape({B, height_, width_ * C})).reshape(dy.shape());
  }

 private:
  int64_t height_, width_;
  TokenLinear* vertical_;
  TokenLinear* horizontal_;
};
}  // namespace

void register_axial_mlp_mixer(MixerRegistry& r) {
  r.add({"axial_mlp", "learned H x H map over rows then W x W over columns (RaftMLP's axial token mixing)",
         [](const MixerContext& ctx) {
           MixerOptions("axial_mlp", ctx.options).finish();
           MF_CHECK(ctx.height > 0 && ctx.width > 0, "axial_mlp needs the model's input size");
           return std::make_unique<AxialMlp>(ctx.height, ctx.width);
         }});
}

}  // namespace mf
