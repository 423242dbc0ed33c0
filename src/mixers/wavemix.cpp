// The `wavemix` token mixer: WaveMix's multi-level DWT block (mixers/wavemix.h).
#include "mixers/wavemix.h"

#include <fmt/format.h>

#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace mf {

// nn.Sequential(Conv2d 1×1, GELU, Dropout, Conv2d 1×1, ConvTranspose2d 4×4/2, BatchNorm2d): children
// "0", "1", "3", "4", "5" so that the keys are the authors'. Dropout is the identity at inference, and
// the engine has no dropout op: in training it is left out (docs/wavemix-and-iformer.md).
class WaveFeedForward : public Module {
 public:
  WaveFeedForward(int64_t in, int64_t hidden, int64_t ff, int64_t out) {
    expand_ = add_child("0", std::make_unique<Linear>(in, hidden, true, /*conv1x1=*/true));
    act_ = add_child("1", make_activation("gelu"));
    reduce_ = add_child("3", std::make_unique<Linear>(hidden, ff, true, /*conv1x1=*/true));
    up_ = add_child("4", std::make_unique<ConvTranspose2d>(ff, out, 4, 2, 1, true));
    norm_ = add_child("5", std::make_unique<Norm>(NormSpec{"batch_norm", 1e-5, true, 0.1}, out));
  }
  std::string kind() const override { return "Sequential"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    return norm_->run(ctx, up_->run(ctx, reduce_->run(ctx, expand_->run_then(ctx, x, *act_))));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = reduce_->backward(ctx, up_->backward(ctx, norm_->backward(ctx, dy)));
    return expand_->backward(ctx, act_->backward(ctx, d));
  }

 private:
  Linear* expand_;
  ActivationLayer* act_;
  Linear* reduce_;
  ConvTranspose2d* up_;
  Norm* norm_;
};

WaveMixBlock::WaveMixBlock(int64_t dim, int levels, int64_t mult, int64_t ff_channels) : dim_(dim), levels_(levels) {
  MF_CHECK(dim % 4 == 0, "wavemix: the width {} must be a multiple of 4 (a quarter goes through the DWT)", dim);
  MF_CHECK(levels >= 1 && levels <= 4, "wavemix: level {} is out of range (the authors' blocks have 1 to 4)", levels);
  MF_CHECK(mult >= 1 && mult <= 16 && ff_channels >= 1 && ff_channels <= 65536,
           "wavemix: mult {} or ff_channel {} is out of range", mult, ff_channels);
  reduction_ = add_child("reduction", std::make_unique<Linear>(dim, dim / 4, true, /*conv1x1=*/true));
  for (int j = 1; j <= levels; ++j) {
    const int64_t in = j == levels ? dim : dim + dim / 2, out = j == 1 ? dim : dim / 2;
    const std::string name = levels == 1 ? "feedforward" : fmt::format("feedforward{}", j);
    feedforward_.push_back(add_child(name, std::make_unique<WaveFeedForward>(in, mult * dim, ff_channels, out)));
  }
}

std::string WaveMixBlock::describe() const { return fmt::format("{} channels, {}-level Haar DWT", dim_, levels_); }

void WaveMixBlock::collect_ops(std::set<OpKind>& ops) const {
  ops.insert(OpKind::Haar2d);
  ops.insert(OpKind::ChannelSlice);
  ops.insert(OpKind::Permute);
  ops.insert(OpKind::ScaledResidual);
}

namespace {
// One level's DWT as the authors lay it out, written into channels [0, C) of `into` ([B, h, w, ≥ C]):
// LL (C/4), then the detail bands with channel 3c + k. Returns the LL band, the next level's input.
Tensor dwt_level(const Exec& e, const Tensor& t, Tensor& into) {
  const int64_t q = t.dim(3);
  const Tensor bands = op::haar2d(e, t);  // [B, h, w, 4, q]: LL, then the three details, band-major
  const int64_t B = bands.dim(0), h = bands.dim(1), w = bands.dim(2);
  const Tensor flat = bands.reshape({B, h, w, 4 * q});
  Tensor ll = op::channel_slice(e, flat, 0, q);
  const Tensor details = op::channel_slice(e, flat, q, 3 * q).reshape({B * h * w, 3, q});
  const Tensor interleaved = op::permute(e, details, {0, 2, 1}).reshape({B, h, w, 3 * q});  // 3c + k
  op::channel_slice_backward_(e, ll, 0, into);
  op::channel_slice_backward_(e, interleaved, q, into);
  return ll;
}

// The adjoint of dwt_level: d_into's channels [0, C) plus d_ll (the gradient reaching the LL band from
// the level below, or undefined) -> the gradient of the level's input t ([B, H, W, C/4]).
Tensor dwt_level_backward(const Exec& e, const Tensor& d_into, const Tensor& d_ll, const Shape& t_shape) {
  const int64_t q = t_shape[3], B = d_into.dim(0), h = d_into.dim(1), w = d_into.dim(2);
  Tensor d_low = op::channel_slice(e, d_into, 0, q);
  if (d_ll.defined()) d_low = op::scaled_residual(e, d_low, nullptr, d_ll, nullptr);
  const Tensor d_details = op::channel_slice(e, d_into, q, 3 * q).reshape({B * h * w, q, 3});
  const Tensor band_major = op::permute(e, d_details, {0, 2, 1}).reshape({B, h, w, 3 * q});
  Tensor d_bands = op::zeros(e, {B, h, w, 4 * q});
  op::channel_slice_backward_(e, d_low, 0, d_bands);
  op::channel_slice_backward_(e, band_major, q, d_bands);
  // The orthonormal transform's adjoint is its inverse (which also crops any zero padding).
  return op::haar2d_inverse(e, d_bands.reshape({B, h, w, 4, q}), t_shape[1], t_shape[2]);
}
}  // namespace

Tensor WaveMixBlock::forward(Ctx& ctx, const Tensor& x) {
  MF_CHECK(x.ndim() == 4 && x.dim(3) == dim_, "{}: expected [B, H, W, {}], got {}", path(), dim_, x.shape().str());
  const int64_t step = int64_t{1} << levels_;
  MF_CHECK(x.dim(1) % step == 0 && x.dim(2) % step == 0,
           "{}: a {}x{} token grid does not halve {} times (the authors' blocks need multiples of {})", path(),
           x.dim(1), x.dim(2), levels_, step);
  const Exec& e = ctx.exec;
  std::vector<Tensor> inputs;  // feedforward{j}'s input, j = 1..L
  Tensor t = reduction_->run(ctx, x);
  if (ctx.training) level_shapes_.clear();
  for (int j = 1; j <= levels_; ++j) {
    const int64_t h = t.dim(1) / 2, w = t.dim(2) / 2;
    Tensor z = op::zeros(e, {x.dim(0), h, w, j == levels_ ? dim_ : dim_ + dim_ / 2});
    if (ctx.training) level_shapes_.push_back(t.shape());
    t = dwt_level(e, t, z);
    inputs.push_back(z);
  }
  Tensor y = feedforward_.back()->run(ctx, inputs.back());
  for (int j = levels_ - 1; j >= 1; --j) {
    Tensor& z = inputs[static_cast<size_t>(j - 1)];
    op::channel_slice_backward_(e, y, dim_, z);  // cat(level j, the level below's result)
    y = feedforward_[static_cast<size_t>(j - 1)]->run(ctx, z);
  }
  return y;
}

Tensor WaveMixBlock::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(level_shapes_.size() == static_cast<size_t>(levels_), "{}: backward without a training forward", path());
  const Exec& e = ctx.exec;
  std::vector<Tensor> d_inputs(static_cast<size_t>(levels_));
  Tensor d = dy;
  for (int j = 1; j < levels_; ++j) {
    d_inputs[static_cast<size_t>(j - 1)] = feedforward_[static_cast<size_t>(j - 1)]->backward(ctx, d);
    d = op::channel_slice(e, d_inputs[static_cast<size_t>(j - 1)], dim_, dim_ / 2);
  }
  d_inputs.back() = feedforward_.back()->backward(ctx, d);
  Tensor d_ll;  // the gradient of the LL band of level j, from level j + 1's DWT
  for (int j = levels_; j >= 1; --j)
    d_ll = dwt_level_backward(e, d_inputs[static_cast<size_t>(j - 1)], d_ll, level_shapes_[static_cast<size_t>(j - 1)]);
  level_shapes_.clear();
  return reduction_->backward(ctx, d_ll);
}

void register_wavemix_mixer(MixerRegistry& r) {
  r.add({"wavemix", "WaveMix's block: 1x1 reduction to C/4, a multi-level Haar DWT, per level a conv MLP with a "
         "transposed-conv upsampling and BatchNorm, coarse to fine",
         [](const MixerContext& ctx) {
           MixerOptions o("wavemix", ctx.options);
           // By default two levels where the stage's token grid halves twice, else one.
           const bool quarters = ctx.height % 4 == 0 && ctx.width % 4 == 0;
           const int64_t level = o.get_int("level", quarters ? 2 : 1);
           const int64_t mult = o.get_int("mult", 2);
           const int64_t ff = o.get_int("ff_channel", ctx.dim);
           o.finish();
           MF_CHECK(level >= 1 && level <= 4, "wavemix: level {} is out of range (the authors' blocks have 1 to 4)", level);
           const int64_t step = int64_t{1} << level;
           MF_CHECK(ctx.height % step == 0 && ctx.width % step == 0,
                    "wavemix: stage {}'s {}x{} token grid does not halve {} times (level {})", ctx.stage, ctx.height,
                    ctx.width, level, level);
           return std::make_unique<WaveMixBlock>(ctx.dim, static_cast<int>(level), mult, ff);
         }});
}

}  // namespace mf
