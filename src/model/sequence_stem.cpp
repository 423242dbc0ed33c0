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
                                  : fmt::format("series of {} channels, patches of {} every {} steps", in_chans_,
                                                spec_.patch_size, spec_.patch_stride);
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
  if (proj_)
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
    Tensor y = proj_->run(ctx, x);
    t = y.reshape({B, y.dim(2), dim_});
  }
  if (pos_embed_) t = op::add_positions(ctx.exec, t, v(pos_embed_));
  if (spec_.position == "sinusoidal") t = op::add_positions(ctx.exec, t, sinusoids(t.dim(1), dim_));
  return t.reshape({B, 1, t.dim(1), dim_});
}

Tensor SequenceStem::backward(Ctx& ctx, const Tensor& dy) {
  const Tensor d = dy.reshape({dy.dim(0), dy.dim(2), dy.dim(3)});
  if (Tensor* g = grad_of(pos_embed_)) op::add_positions_backward_(ctx.exec, d, *g);
  if (embed_) return embed_->backward(ctx, d);
  return proj_->backward(ctx, dy);
}

}  // namespace mf
