#include "model/sequence_stem.h"

#include <cmath>

#include <fmt/format.h>

namespace mf {

Embedding::Embedding(int64_t num, int64_t dim) {
  weight_ = &add_param("weight", {num, dim}, Init::trunc_normal(0.02f), true);
}

std::string Embedding::describe() const {
  return fmt::format("{} x {}", weight_->value.dim(0), weight_->value.dim(1));
}

Tensor Embedding::forward(Ctx& ctx, const Tensor& ids) {
  if (ctx.training) saved_ids_ = ids;
  return op::embedding(ctx.exec, ids, v(weight_));
}

Tensor Embedding::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_ids_.defined(), "{}: backward without a training forward", path());
  if (Tensor* g = grad_of(weight_)) op::embedding_backward_(ctx.exec, saved_ids_, dy, *g);
  saved_ids_ = Tensor();
  return Tensor();
}

SequenceStem::SequenceStem(const MetaFormerConfig& c) : spec_(c.sequence), in_chans_(c.in_chans), dim_(c.dims[0]) {
  if (spec_.input == "tokens") {
    embed_ = add_child("embed", std::make_unique<Embedding>(spec_.vocab_size, dim_));
  } else if (spec_.independent_channels()) {
    patch_proj_ = add_child("proj", std::make_unique<Linear>(spec_.patch_size, dim_, /*bias=*/true));
    patch_proj_->set_needs_input_grad(false);  // the input is data
  } else {
    const ConvGeometry g{1, spec_.patch_size, 1, spec_.patch_stride, 0, 0};
    proj_ = add_child("proj", std::make_unique<Conv2d>(c.in_chans, dim_, g, /*bias=*/true));
    proj_->set_needs_input_grad(false);  // the input is data
  }
  has_positions_ = spec_.position != "none";
  // timm's pos_embed: truncated normal, std 0.02, no weight decay.
  if (spec_.position == "learned")
    pos_embed_ = &add_param("pos_embed", {spec_.tokens(spec_.length), dim_}, Init::trunc_normal(0.02f), false);
}

std::string SequenceStem::describe() const {
  const std::string what = embed_ ? fmt::format("token ids (vocabulary {})", spec_.vocab_size)
                                  : fmt::format("series of {} {} channels, patches of {} every {} steps{}", in_chans_,
                                                spec_.channels, spec_.patch_size, spec_.patch_stride,
                                                spec_.scaling == "std" ? ", std scaling" : "");
  return fmt::format("{}, length {}, positions: {}", what, spec_.length, spec_.position);
}

void SequenceStem::collect_ops(std::set<OpKind>& ops) const {
  if (has_positions_) ops.insert(OpKind::AddPositions);
}

void SequenceStem::check_input(const Shape& s) const {
  MF_CHECK(s.ndim() == 4 && s[1] == 1, "a sequence model's input is a batch of sequences [B, {}, 1, L] (NCHW) or "
           "[B, 1, L, {}] (channels-last); got shape {}", in_chans_, in_chans_, s.str());
  MF_CHECK(s[0] >= 1, "empty batch");
  MF_CHECK(s[3] == in_chans_, "this sequence model takes {} channel(s) per step; got {}", in_chans_, s[3]);
  const int64_t L = s[2];
  if (proj_ || patch_proj_)
    MF_CHECK(L >= spec_.patch_size, "a series of {} steps is shorter than one patch ({} steps)", L, spec_.patch_size);
  MF_CHECK(L >= 1, "an empty sequence");
  if (pos_embed_) {
    const int64_t table = pos_embed_->value.dim(0), n = spec_.tokens(L);
    MF_CHECK(n <= table, "a sequence of {} {} ({} tokens) is longer than the learned position table allows ({} "
             "tokens, sequence.length {})", L, embed_ ? "ids" : "steps", n, table, spec_.length);
  }
}

const Tensor& SequenceStem::sinusoids(int64_t tokens, int64_t dim) {
  if (!sinusoids_.defined() || sinusoids_.dim(0) < tokens) {
    sinusoids_ = Tensor::empty({tokens, dim});
    for (int64_t n = 0; n < tokens; ++n)
      for (int64_t i = 0; i < dim / 2; ++i) {
        const double angle = static_cast<double>(n) / std::pow(10000.0, 2.0 * static_cast<double>(i) / static_cast<double>(dim));
        sinusoids_.data()[n * dim + 2 * i] = static_cast<float>(std::sin(angle));
        sinusoids_.data()[n * dim + 2 * i + 1] = static_cast<float>(std::cos(angle));
      }
  }
  return sinusoids_;
}

Tensor SequenceStem::forward(Ctx& ctx, const Tensor& x) {
  check_input(x.shape());
  const int64_t B = x.dim(0), L = x.dim(2);
  Tensor t;
  if (embed_) {
    t = embed_->run(ctx, x.reshape({B, L}));
  } else {
    if (x.device() == Device::CPU) {  // a NaN would spread through every later token silently
      const float* p = x.data();
      for (int64_t i = 0; i < x.numel(); ++i)
        MF_CHECK(!std::isnan(p[i]), "the series has a NaN at step {}, channel {} of sample {}", (i / in_chans_) % L,
                 i % in_chans_, i / (in_chans_ * L));
    }
    if (patch_proj_ || spec_.scaling == "std")
      MF_CHECK(x.device() == Device::CPU, "series with independent channels or std scaling are prepared on the host: "
               "run them on the ref or cpu backend");
    if (patch_proj_) {
      const Tensor patches = channel_patches(scaled(x));
      const int64_t n = patches.dim(0) / (B * in_chans_);
      t = patch_proj_->run(ctx, patches).reshape({B * in_chans_, n, dim_});
    } else {
      Tensor y = proj_->run(ctx, scaled(x));
      t = y.reshape({B, y.dim(2), dim_});
    }
  }
  if (pos_embed_) t = op::add_positions(ctx.exec, t, v(pos_embed_));
  if (spec_.position == "sinusoidal") t = op::add_positions(ctx.exec, t, sinusoids(t.dim(1), dim_));
  return t.reshape({t.dim(0), 1, t.dim(1), dim_});
}

Tensor SequenceStem::scaled(const Tensor& x) {
  if (spec_.scaling != "std") return x;
  // PatchTSMixer's std scaler over the whole context: loc = mean, scale = sqrt(biased variance + 1e-5).
  const int64_t B = x.dim(0), L = x.dim(2), C = in_chans_;
  loc_.assign(static_cast<size_t>(B * C), 0.f);
  scale_.assign(static_cast<size_t>(B * C), 1.f);
  Tensor y = Tensor::empty(x.shape());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      const float* xs = x.data() + b * L * C + c;
      double mean = 0, var = 0;
      for (int64_t t = 0; t < L; ++t) mean += xs[t * C];
      mean /= static_cast<double>(L);
      for (int64_t t = 0; t < L; ++t) var += (xs[t * C] - mean) * (xs[t * C] - mean);
      const double scale = std::sqrt(var / static_cast<double>(L) + 1e-5);
      loc_[static_cast<size_t>(b * C + c)] = static_cast<float>(mean);
      scale_[static_cast<size_t>(b * C + c)] = static_cast<float>(scale);
      for (int64_t t = 0; t < L; ++t)
        y.data()[b * L * C + t * C + c] = static_cast<float>((xs[t * C] - mean) / scale);
    }
  return y;
}

Tensor SequenceStem::channel_patches(const Tensor& x) const {
  const int64_t B = x.dim(0), L = x.dim(2), C = in_chans_, P = spec_.patch_size, S = spec_.patch_stride;
  const int64_t N = spec_.tokens(L);
  const int64_t start = L - (P + S * (N - 1));  // the steps before the first patch are left out
  Tensor p = Tensor::empty({B * C * N, P});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < P; ++k)
          p.data()[((b * C + c) * N + n) * P + k] = x.data()[(b * L + start + n * S + k) * C + c];
  return p;
}

Tensor SequenceStem::backward(Ctx& ctx, const Tensor& dy) {
  const Tensor d = dy.reshape({dy.dim(0), dy.dim(2), dy.dim(3)});
  if (Tensor* g = grad_of(pos_embed_)) op::add_positions_backward_(ctx.exec, d, *g);
  if (embed_) return embed_->backward(ctx, d);
  if (patch_proj_) return patch_proj_->backward(ctx, d.reshape({d.dim(0) * d.dim(1), dim_}));
  return proj_->backward(ctx, dy);
}

}  // namespace mf
