// The `strip` token mixer: Strip-MLP's TokenMixing (mixers/strip.h). The strip projections run as the
// op strip_mix on channels-last data; the authors' views and permutes around their grouped
// convolutions are folded into its indexing (docs/strip-mlp-and-cas-vit.md).
#include "mixers/strip.h"

#include <fmt/format.h>

#include <algorithm>

#include "nn/activation.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace mf {

namespace {
const NormSpec kBatchNorm{"batch_norm", 1e-5, true, 0.1};  // nn.BatchNorm2d's defaults

Tensor add(Ctx& ctx, const Tensor& a, const Tensor& b) { return op::scaled_residual_new(ctx.exec, a, nullptr, b, nullptr); }

// The authors' BN_Activ_Conv as DepthWise_Conv uses it: BN, GELU, depthwise 3×3 without bias.
class BnActConv : public Module {
 public:
  explicit BnActConv(int64_t channels) {
    bn_ = add_child("BN", std::make_unique<Norm>(kBatchNorm, channels));
    act_ = add_child("Activation", make_activation("gelu"));
    conv_ = add_child("Conv", std::make_unique<DepthwiseNoBias>(channels, 3, 3));
  }
  std::string kind() const override { return "BN_Activ_Conv"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override { return conv_->run(ctx, act_->run(ctx, bn_->run(ctx, x))); }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    return bn_->backward(ctx, act_->backward(ctx, conv_->backward(ctx, dy)));
  }

 private:
  Norm* bn_;
  ActivationLayer* act_;
  DepthwiseNoBias* conv_;
};

class DepthWiseConv : public Module {
 public:
  explicit DepthWiseConv(int64_t channels) { merge_ = add_child("conv_merge", std::make_unique<BnActConv>(channels)); }
  std::string kind() const override { return "DepthWise_Conv"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override { return merge_->run(ctx, x); }
  Tensor backward(Ctx& ctx, const Tensor& dy) override { return merge_->backward(ctx, dy); }

 private:
  BnActConv* merge_;
};

// A named holder for parameters the parent's forward uses directly (the strip projections).
class ParamHolder : public Module {
 public:
  explicit ParamHolder(std::string kind) : kind_(std::move(kind)) {}
  std::string kind() const override { return kind_; }
  using Module::add_param;

 private:
  std::string kind_;
};

// A plain container named like the authors' nn.Sequential / Mlp, whose parent runs the children.
class Container : public Module {
 public:
  explicit Container(std::string kind) : kind_(std::move(kind)) {}
  std::string kind() const override { return kind_; }
  template <typename T>
  T* add(const std::string& name, std::unique_ptr<T> child) {
    return add_child(name, std::move(child));
  }

 private:
  std::string kind_;
};
}  // namespace

// ------------------------------------------------------------------------------ DepthwiseNoBias
DepthwiseNoBias::DepthwiseNoBias(int64_t channels, int kh, int kw) : g_{kh, kw, 1, 1, kh / 2, kw / 2} {
  weight_ = &add_param("weight", {channels, 1, kh, kw}, Init::trunc_normal(0.02f), true);
}

std::string DepthwiseNoBias::describe() const {
  return fmt::format("depthwise {}x{}, {} channels", g_.kernel_h, g_.kernel_w, v(weight_).dim(0));
}

Tensor DepthwiseNoBias::forward(Ctx& ctx, const Tensor& x) {
  if (ctx.training) saved_x_ = x;
  return op::depthwise_conv2d(ctx.exec, x, v(weight_), nullptr, g_);
}

Tensor DepthwiseNoBias::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  Tensor dx = op::depthwise_conv2d_backward(ctx.exec, saved_x_, v(weight_), g_, dy, grad_of(weight_), nullptr);
  saved_x_ = Tensor();
  return dx;
}

// ----------------------------------------------------------------------------- RelativePosition
RelativePosition::RelativePosition(int64_t channels, int64_t max_distance) : max_(max_distance) {
  table_ = &add_param("embeddings_table", {2 * max_distance + 1, channels}, Init::trunc_normal(0.02f), true);
}

int64_t RelativePosition::row(int64_t i, int64_t j) const { return std::clamp(j - i, -max_, max_) + max_; }

Tensor RelativePosition::table_for(int64_t height, int64_t width) const {
  // Gathered on the host, placed where the table lives (nn/module.h, add_on_host), and cached with
  // the table until it changes: every pass reads it, and a pass replayed as a CUDA graph must not copy
  // between host and device.
  const Tensor& live = v(table_);
  const std::string key = "relative_position." + std::to_string(height) + "x" + std::to_string(width);
  if (auto cached = live.derived(key)) return *std::static_pointer_cast<Tensor>(cached);
  const Tensor table = live.to(Device::CPU);
  const int64_t C = table.dim(1);
  Tensor pos = Tensor::empty({height * width, C});
  for (int64_t i = 0; i < height; ++i)
    for (int64_t j = 0; j < width; ++j)
      std::copy_n(table.data() + row(i, j) * C, C, pos.data() + (i * width + j) * C);
  auto placed = std::make_shared<Tensor>(pos.to(live.device()));
  live.set_derived(key, placed);
  return *placed;
}

void RelativePosition::accumulate_grad(const Tensor& dpos, int64_t height, int64_t width) {
  Tensor* g = grad_of(table_);
  if (!g) return;
  const int64_t C = v(table_).dim(1);
  const Tensor d = dpos.to(Device::CPU);
  add_on_host(*g, [&](float* table) {
    for (int64_t i = 0; i < height; ++i)
      for (int64_t j = 0; j < width; ++j) {
        float* dst = table + row(i, j) * C;
        const float* src = d.data() + (i * width + j) * C;
        for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
      }
  });
}

// -------------------------------------------------------------------------------- StripMlpBlock
StripMlpBlock::StripMlpBlock(int64_t channels, int64_t grid) : channels_(channels), half_(channels / 2), grid_(grid) {
  MF_CHECK(channels >= 2 && channels % 2 == 0, "strip: a Strip-MLP block needs an even channel count, not {}", channels);
  // The authors' rule: `patch` 2 when the width is a multiple of 80, else 4; self.C = int(channels · 0.5 /
  // patch) channel groups, each mixed by its own strip weights.
  const int64_t patch = channels % 80 == 0 ? 2 : 4;
  groups_ = channels / (2 * patch);
  MF_CHECK(groups_ >= 1 && half_ % groups_ == 0,
           "strip: {} channels give {} strip groups, which do not divide their {} strip channels (the authors' view "
           "needs it)", channels, groups_, half_);
  MF_CHECK(grid >= 1, "strip: the token grid must be known (got {})", grid);
  const int64_t L = grid;
  // Registered in the authors' state-dict order.
  act_ = add_child("activation", make_activation("gelu"));
  bn_ = add_child("BN", std::make_unique<Norm>(kBatchNorm, half_));
  auto* ph = add_child("proj_h", std::make_unique<ParamHolder>("Conv2d"));
  proj_h_w_ = &ph->add_param("weight", {groups_ * L, L, 1, 3}, Init::trunc_normal(0.02f), true);
  proj_h_b_ = &ph->add_param("bias", {groups_ * L}, Init::zeros(), false);
  auto* pw = add_child("proj_w", std::make_unique<ParamHolder>("Conv2d"));
  proj_w_w_ = &pw->add_param("weight", {groups_ * L, L, 1, 3}, Init::trunc_normal(0.02f), true);
  proj_w_b_ = &pw->add_param("bias", {groups_ * L}, Init::zeros(), false);
  fuse_h_ = add_child("fuse_h", std::make_unique<Linear>(channels, half_, false, true));
  fuse_w_ = add_child("fuse_w", std::make_unique<Linear>(channels, half_, false, true));
  auto* mlp = add_child("mlp", std::make_unique<Container>("Sequential"));
  mlp_conv_ = mlp->add("0", std::make_unique<Linear>(channels, channels, true, true));
  mlp_bn_ = mlp->add("1", std::make_unique<Norm>(kBatchNorm, channels));
  mlp_act_ = mlp->add("2", make_activation("gelu"));
  fc_h_ = add_child("fc_h", std::make_unique<DepthwiseNoBias>(half_, 3, 7));
  fc_w_ = add_child("fc_w", std::make_unique<DepthwiseNoBias>(half_, 7, 3));
  auto* rw = add_child("reweight", std::make_unique<Container>("Mlp"));
  reweight_fc1_ = rw->add("fc1", std::make_unique<Linear>(half_, half_ / 2, true, true));
  reweight_act_ = rw->add("act", make_activation("gelu"));
  reweight_fc2_ = rw->add("fc2", std::make_unique<Linear>(half_ / 2, half_ * 3, true, true));
  fuse_ = add_child("fuse", std::make_unique<Linear>(channels, channels, false, true));
  pos_h_ = add_child("relate_pos_h", std::make_unique<RelativePosition>(half_, grid));
  pos_w_ = add_child("relate_pos_w", std::make_unique<RelativePosition>(half_, grid));
}

std::string StripMlpBlock::describe() const {
  return fmt::format("{} channels, {}x{} grid, {} strip groups", channels_, grid_, grid_, groups_);
}

void StripMlpBlock::collect_ops(std::set<OpKind>& ops) const {
  for (OpKind k : {OpKind::StripMix, OpKind::SplitAttention, OpKind::ChannelSlice, OpKind::AddPositions,
                   OpKind::GlobalAvgPool, OpKind::ScaledResidual, OpKind::Linear, OpKind::Activation})
    ops.insert(k);
}

Tensor StripMlpBlock::forward(Ctx& ctx, const Tensor& x) {
  MF_CHECK(x.ndim() == 4 && x.dim(3) == channels_, "{}: expected [B, H, W, {}], got {}", path(), channels_,
           x.shape().str());
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2);
  MF_CHECK(H == grid_ && W == grid_, "{}: Strip-MLP's strip projections were built for a {}x{} token grid and cannot "
           "mix {}x{}", path(), grid_, grid_, H, W);
  const Exec& e = ctx.exec;
  auto cat = [&](const Tensor& a, const Tensor& b) { return op::concat_channels(e, a, b); };
  // mlp: 1×1 conv, BatchNorm, GELU (the norm folded into the conv at inference).
  Tensor m;
  if (ctx.training) {
    m = mlp_act_->run(ctx, mlp_bn_->run(ctx, mlp_conv_->run(ctx, x)));
  } else {
    const auto [w, b] = fold_batch_norm(v(mlp_conv_->weight()), opt(mlp_conv_->bias()), *mlp_bn_);
    m = op::linear_act(e, x, w, &b, mlp_act_->params());
  }
  const Tensor x1 = op::channel_slice(e, m, 0, half_), x2 = op::channel_slice(e, m, half_, half_);
  const Shape tokens{B, H * W, half_};

  // The strip MLP on the first half.
  const Tensor a = op::add_positions(e, x1.reshape(tokens), pos_h_->table_for(H, W)).reshape(x1.shape());
  const Tensor rows = op::strip_mix(e, a, v(proj_h_w_), opt(proj_h_b_), 2);
  const Tensor cat_h = cat(rows, x1);
  Tensor u;
  if (ctx.training) {
    u = act_->run(ctx, bn_->run(ctx, fuse_h_->run(ctx, cat_h)));
  } else {
    const auto [w, b] = fold_batch_norm(v(fuse_h_->weight()), nullptr, *bn_);
    u = op::linear_act(e, cat_h, w, &b, act_->params());
  }
  const Tensor u2 = op::add_positions(e, u.reshape(tokens), pos_w_->table_for(H, W)).reshape(u.shape());
  const Tensor cols = op::strip_mix(e, u2, v(proj_w_w_), opt(proj_w_b_), 1);
  const Tensor s1 = fuse_w_->run(ctx, cat(x1, cols));

  // The second half: the authors' x_w = fc_h(x_2), x_h = fc_w(x_2), reweighted with x_2 itself.
  const Tensor xw = fc_h_->run(ctx, x2);
  const Tensor xh = fc_w_->run(ctx, x2);
  const Tensor sum = add(ctx, add(ctx, xh, xw), x2);
  const Tensor pooled = op::global_avg_pool(e, sum);
  const Tensor logits = reweight_fc2_->run(ctx, reweight_fc1_->run_then(ctx, pooled, *reweight_act_));
  const Tensor s2 = op::split_attention(e, {xh, xw, x2}, logits);
  if (ctx.training) {
    saved_a_ = a, saved_u_ = u2, saved_x2_ = x2, saved_xh_ = xh, saved_xw_ = xw, saved_logits_ = logits;
    saved_shape_ = x2.shape();
  }
  return fuse_->run(ctx, cat(s1, s2));
}

Tensor StripMlpBlock::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_a_.defined(), "{}: backward without a training forward", path());
  const Exec& e = ctx.exec;
  const int64_t B = saved_shape_[0], H = saved_shape_[1], W = saved_shape_[2];
  const Shape tokens{B, H * W, half_};
  const Tensor d_cat = fuse_->backward(ctx, dy);
  const Tensor ds1 = op::channel_slice(e, d_cat, 0, half_), ds2 = op::channel_slice(e, d_cat, half_, half_);

  // Second half.
  Tensor dlogits;
  std::vector<Tensor> d = op::split_attention_backward(e, {saved_xh_, saved_xw_, saved_x2_}, saved_logits_, ds2, dlogits);
  const Tensor dpooled =
      reweight_fc1_->backward(ctx, reweight_act_->backward(ctx, reweight_fc2_->backward(ctx, dlogits)));
  const Tensor dsum = op::global_avg_pool_backward(e, dpooled, saved_shape_);
  Tensor dx2 = add(ctx, d[2], dsum);
  dx2 = add(ctx, dx2, fc_w_->backward(ctx, add(ctx, d[0], dsum)));
  dx2 = add(ctx, dx2, fc_h_->backward(ctx, add(ctx, d[1], dsum)));

  // The strip MLP.
  const Tensor d_cat_w = fuse_w_->backward(ctx, ds1);
  Tensor dx1 = op::channel_slice(e, d_cat_w, 0, half_);
  const Tensor dcols = op::channel_slice(e, d_cat_w, half_, half_);
  const Tensor du = op::strip_mix_backward(e, saved_u_, v(proj_w_w_), 1, dcols, true, grad_of(proj_w_w_),
                                           grad_of(proj_w_b_));
  // The position gradient is a parameter's (fp32), on the backend's device.
  Tensor dpos = Tensor::empty({H * W, half_}, e.backend->device());
  dpos.zero();
  op::add_positions_backward_(e, du.reshape(tokens), dpos);
  pos_w_->accumulate_grad(dpos, H, W);
  const Tensor d_cat_h = fuse_h_->backward(ctx, bn_->backward(ctx, act_->backward(ctx, du)));
  dx1 = add(ctx, dx1, op::channel_slice(e, d_cat_h, half_, half_));
  const Tensor da = op::strip_mix_backward(e, saved_a_, v(proj_h_w_), 2, op::channel_slice(e, d_cat_h, 0, half_), true,
                                           grad_of(proj_h_w_), grad_of(proj_h_b_));
  dpos.zero();
  op::add_positions_backward_(e, da.reshape(tokens), dpos);
  pos_h_->accumulate_grad(dpos, H, W);
  dx1 = add(ctx, dx1, da);

  Shape s = saved_shape_;
  s[3] = channels_;
  Tensor dm = op::zeros(e, s);
  op::channel_slice_backward_(e, dx1, 0, dm);
  op::channel_slice_backward_(e, dx2, half_, dm);
  saved_a_ = saved_u_ = saved_x2_ = saved_xh_ = saved_xw_ = saved_logits_ = Tensor();
  return mlp_conv_->backward(ctx, mlp_bn_->backward(ctx, mlp_act_->backward(ctx, dm)));
}

// ----------------------------------------------------------------------------- StripTokenMixing
StripTokenMixing::StripTokenMixing(int64_t channels, int64_t height, int64_t width) {
  MF_CHECK(height == width, "strip: Strip-MLP's strip projections need a square token grid, not {}x{}", height, width);
  block_ = add_child("smlp_block", std::make_unique<StripMlpBlock>(channels, height));
  dwsc_ = add_child("dwsc", std::make_unique<DepthWiseConv>(channels));
}

Tensor StripTokenMixing::forward(Ctx& ctx, const Tensor& x) { return block_->run(ctx, dwsc_->run(ctx, x)); }

Tensor StripTokenMixing::backward(Ctx& ctx, const Tensor& dy) { return dwsc_->backward(ctx, block_->backward(ctx, dy)); }

void register_strip_mixer(MixerRegistry& r) {
  r.add({"strip", "Strip-MLP's token mixing: a depthwise conv, then half the channels mixed along whole rows and "
         "columns of the (square) token grid per channel group, the other half by 3x7 and 7x3 depthwise convs "
         "reweighted by split attention",
         [](const MixerContext& ctx) {
           MixerOptions o("strip", ctx.options);
           o.finish();
           return std::make_unique<StripTokenMixing>(ctx.dim, ctx.height, ctx.width);
         }});
}

}  // namespace mf
