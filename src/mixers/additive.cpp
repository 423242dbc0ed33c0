// The `additive` token mixer: CAS-ViT's convolutional additive token mixer (mixers/additive.h). The
// sigmoid gates and the product with v are the op `gate`; the BatchNorm of each spatial operation is
// folded into its depthwise convolution at inference.
#include "mixers/additive.h"

#include <fmt/format.h>

#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace mf {

namespace {
const NormSpec kBatchNorm{"batch_norm", 1e-5, true, 0.1};  // nn.BatchNorm2d's defaults

Tensor add(Ctx& ctx, const Tensor& a, const Tensor& b) { return op::scaled_residual_new(ctx.exec, a, nullptr, b, nullptr); }

// A container named like the authors' nn.Sequential, whose owner runs the children.
class Seq : public Module {
 public:
  std::string kind() const override { return "Sequential"; }
  template <typename T>
  T* add(const std::string& name, std::unique_ptr<T> child) {
    return add_child(name, std::move(child));
  }
};

// x ⊙ σ(block(x)), block = dw 3×3 → BN → ReLU → 1×1 conv to one channel (the sigmoid is the gate's).
class SpatialOperation : public Module {
 public:
  explicit SpatialOperation(int64_t dim) {
    auto* block = add_child("block", std::make_unique<Seq>());
    dw_ = block->add("0", std::make_unique<DepthwiseConv2d>(dim, 3, 1, true));
    bn_ = block->add("1", std::make_unique<Norm>(kBatchNorm, dim));
    relu_ = block->add("2", make_activation("relu"));
    to_one_ = block->add("3", std::make_unique<Linear>(dim, 1, false, true));
  }
  std::string kind() const override { return "SpatialOperation"; }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::Gate);
    ops.insert(OpKind::ScaledResidual);
  }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor h;
    if (ctx.training) {
      h = bn_->run(ctx, dw_->run(ctx, x));
    } else {  // BatchNorm folded into the depthwise convolution
      const auto [w, b] = fold_batch_norm(v(dw_->weight()), opt(dw_->bias()), *bn_);
      h = op::depthwise_conv2d(ctx.exec, x, w, &b, dw_->geometry());
    }
    const Tensor g = to_one_->run(ctx, relu_->run(ctx, h));
    if (ctx.training) saved_x_ = x, saved_g_ = g;
    return op::gate(ctx.exec, x, g, true);
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
    auto [dx, dg] = op::gate_backward(ctx.exec, saved_x_, saved_g_, true, dy);
    const Tensor d = dw_->backward(ctx, bn_->backward(ctx, relu_->backward(ctx, to_one_->backward(ctx, dg))));
    saved_x_ = saved_g_ = Tensor();
    return add(ctx, dx, d);
  }

 private:
  DepthwiseConv2d* dw_;
  Norm* bn_;
  ActivationLayer* relu_;
  Linear* to_one_;
  Tensor saved_x_, saved_g_;
};

// x ⊙ σ(W · mean over positions of x): one gate per sample and channel.
class ChannelOperation : public Module {
 public:
  explicit ChannelOperation(int64_t dim) {
    auto* block = add_child("block", std::make_unique<Seq>());
    fc_ = block->add("1", std::make_unique<Linear>(dim, dim, false, true));
  }
  std::string kind() const override { return "ChannelOperation"; }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::Gate);
    ops.insert(OpKind::GlobalAvgPool);
    ops.insert(OpKind::ScaledResidual);
  }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const Tensor g = fc_->run(ctx, op::global_avg_pool(ctx.exec, x));
    if (ctx.training) saved_x_ = x, saved_g_ = g;
    return op::gate(ctx.exec, x, g, true);
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
    auto [dx, dg] = op::gate_backward(ctx.exec, saved_x_, saved_g_, true, dy);
    const Tensor d = op::global_avg_pool_backward(ctx.exec, fc_->backward(ctx, dg), saved_x_.shape());
    saved_x_ = saved_g_ = Tensor();
    return add(ctx, dx, d);
  }

 private:
  Linear* fc_;
  Tensor saved_x_, saved_g_;
};

// oper_q / oper_k: the spatial, then the channel operation.
class Operations : public Module {
 public:
  explicit Operations(int64_t dim) {
    spatial_ = add_child("0", std::make_unique<SpatialOperation>(dim));
    channel_ = add_child("1", std::make_unique<ChannelOperation>(dim));
  }
  std::string kind() const override { return "Sequential"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override { return channel_->run(ctx, spatial_->run(ctx, x)); }
  Tensor backward(Ctx& ctx, const Tensor& dy) override { return spatial_->backward(ctx, channel_->backward(ctx, dy)); }

 private:
  SpatialOperation* spatial_;
  ChannelOperation* channel_;
};
}  // namespace

AdditiveTokenMixer::AdditiveTokenMixer(int64_t dim, bool qkv_bias) : dim_(dim) {
  qkv_ = add_child("qkv", std::make_unique<Linear>(dim, 3 * dim, qkv_bias, true));
  oper_q_ = add_child("oper_q", std::make_unique<Operations>(dim));
  oper_k_ = add_child("oper_k", std::make_unique<Operations>(dim));
  dwc_ = add_child("dwc", std::make_unique<DepthwiseConv2d>(dim, 3, 1, true));
  proj_ = add_child("proj", std::make_unique<DepthwiseConv2d>(dim, 3, 1, true));
}

std::string AdditiveTokenMixer::describe() const { return fmt::format("{} channels", dim_); }

void AdditiveTokenMixer::collect_ops(std::set<OpKind>& ops) const {
  ops.insert(OpKind::ChannelSlice);
  ops.insert(OpKind::Gate);
  ops.insert(OpKind::ScaledResidual);
}

Tensor AdditiveTokenMixer::forward(Ctx& ctx, const Tensor& x) {
  MF_CHECK(x.ndim() == 4 && x.dim(3) == dim_, "{}: expected [B, H, W, {}], got {}", path(), dim_, x.shape().str());
  const Exec& e = ctx.exec;
  const Tensor qkv = qkv_->run(ctx, x);  // torch's chunk(3, dim=1): q, k, v in that order
  const Tensor q = oper_q_->run(ctx, op::channel_slice(e, qkv, 0, dim_));
  const Tensor k = oper_k_->run(ctx, op::channel_slice(e, qkv, dim_, dim_));
  const Tensor v = op::channel_slice(e, qkv, 2 * dim_, dim_);
  const Tensor mix = dwc_->run(ctx, add(ctx, q, k));
  if (ctx.training) saved_v_ = v, saved_mix_ = mix;
  return proj_->run(ctx, op::gate(e, v, mix, false));
}

Tensor AdditiveTokenMixer::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_v_.defined(), "{}: backward without a training forward", path());
  const Exec& e = ctx.exec;
  auto [dv, dmix] = op::gate_backward(e, saved_v_, saved_mix_, false, proj_->backward(ctx, dy));
  const Tensor dsum = dwc_->backward(ctx, dmix);
  Shape s = dy.shape();
  s[3] = 3 * dim_;
  Tensor dqkv = op::zeros(e, s);
  op::channel_slice_backward_(e, oper_q_->backward(ctx, dsum), 0, dqkv);
  op::channel_slice_backward_(e, oper_k_->backward(ctx, dsum), dim_, dqkv);
  op::channel_slice_backward_(e, dv, 2 * dim_, dqkv);
  saved_v_ = saved_mix_ = Tensor();
  return qkv_->backward(ctx, dqkv);
}

void register_additive_mixer(MixerRegistry& r) {
  r.add({"additive", "CAS-ViT's convolutional additive token mixer: q and k each gated by a spatial and a channel "
         "sigmoid operation, summed, a depthwise conv, times v, a depthwise conv",
         [](const MixerContext& ctx) {
           MixerOptions o("additive", ctx.options);
           const bool bias = o.get_bool("qkv_bias", false);
           o.finish();
           return std::make_unique<AdditiveTokenMixer>(ctx.dim, bias);
         }});
}

}  // namespace mf
