// Strip-MLP (Cao et al., ICCV 2023; Med-Process/Strip_MLP), as the authors' StripMLPNet builds it:
//   patch_embed                       4×4 stride-4 conv, no bias
//   blocks{1..4}.{b}                  BasicBlock: x + token_mixing(x), then x + channel_mixing(x)
//       token_mixing.{smlp_block, dwsc}           the `strip` mixer (mixers/strip.h)
//       channel_mixing.{conv_77, layer_norm, fc1, fc2, grn}
//                                                 depthwise 7×7, LayerNorm, fc1 (× alpha), GELU, GRN, fc2
//   merging{1..3}                     2×2 stride-2 conv doubling the width, no bias
//   conv_s1_28, conv_s1_14, conv_s2_14
//                                     2×2 stride-2 grouped convs (one input channel per group, two
//                                     outputs): the cross-stage shortcuts added before stages 3 and 4
//   norm, head                        BatchNorm, mean over tokens, Linear
#include <fmt/format.h>

#include "mixers/strip.h"
#include "model/custom_layouts.h"
#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/sequential.h"

namespace mf {

namespace {

Tensor add(Ctx& ctx, const Tensor& a, const Tensor& b) { return op::scaled_residual_new(ctx.exec, a, nullptr, b, nullptr); }

// ConvNeXt-V2's GRN with the authors' parameter shapes [1, 1, 1, C].
class Grn : public Module {
 public:
  explicit Grn(int64_t channels) {
    gamma_ = &add_param("gamma", {1, 1, 1, channels}, Init::zeros(), false);
    beta_ = &add_param("beta", {1, 1, 1, channels}, Init::zeros(), false);
  }
  std::string kind() const override { return "GRN"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::Grn); }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    if (ctx.training) saved_x_ = x;
    return op::grn(ctx.exec, x, v(gamma_), v(beta_));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
    Tensor dx = op::grn_backward(ctx.exec, saved_x_, v(gamma_), dy, grad_of(gamma_), grad_of(beta_));
    saved_x_ = Tensor();
    return dx;
  }

 private:
  Parameter* gamma_;
  Parameter* beta_;
  Tensor saved_x_;
};

class ChannelMixing : public Module {
 public:
  ChannelMixing(int64_t dim, int64_t alpha, const NormSpec& norm) {
    conv_ = add_child("conv_77", std::make_unique<DepthwiseNoBias>(dim, 7, 7));
    norm_ = add_child("layer_norm", std::make_unique<Norm>(norm, dim));
    fc1_ = add_child("fc1", std::make_unique<Linear>(dim, alpha * dim, true));
    act_ = add_child("activation", make_activation("gelu"));
    fc2_ = add_child("fc2", std::make_unique<Linear>(alpha * dim, dim, true));
    grn_ = add_child("grn", std::make_unique<Grn>(alpha * dim));
  }
  std::string kind() const override { return "ChannelMixing"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor h = fc1_->run_then(ctx, norm_->run(ctx, conv_->run(ctx, x)), *act_);
    return fc2_->run(ctx, grn_->run(ctx, h));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = act_->backward(ctx, grn_->backward(ctx, fc2_->backward(ctx, dy)));
    return conv_->backward(ctx, norm_->backward(ctx, fc1_->backward(ctx, d)));
  }

 private:
  DepthwiseNoBias* conv_;
  Norm* norm_;
  Linear* fc1_;
  ActivationLayer* act_;
  Linear* fc2_;
  Grn* grn_;
};

class BasicBlock : public Module {
 public:
  BasicBlock(const MetaFormerConfig& c, size_t s, int64_t grid) {
    const int64_t dim = c.dims[s];
    MixerOptions o("strip", c.mixers[s].options);
    o.finish();
    token_ = add_child("token_mixing", std::make_unique<StripTokenMixing>(dim, grid, grid));
    channel_ = add_child("channel_mixing",
                         std::make_unique<ChannelMixing>(dim, static_cast<int64_t>(c.mlp_ratio), c.norms[s]));
  }
  std::string kind() const override { return "BasicBlock"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::ScaledResidual); }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const Tensor y = add(ctx, x, token_->run(ctx, x));
    return add(ctx, y, channel_->run(ctx, y));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const Tensor d = add(ctx, dy, channel_->backward(ctx, dy));
    return add(ctx, d, token_->backward(ctx, d));
  }

 private:
  StripTokenMixing* token_;
  ChannelMixing* channel_;
};

// nn.Conv2d(in, out, k, stride k, groups=in, bias=False), one input channel per group: run as a dense
// convolution whose weight holds each output's kernel at its group's input channel and zeros
// elsewhere (the zero terms add exact zeros).
class GroupedConv : public Module {
 public:
  GroupedConv(int64_t in, int64_t out, int kernel) : in_(in), out_(out), g_{kernel, kernel, kernel, kernel, 0, 0} {
    MF_CHECK(out % in == 0, "Strip-MLP's grouped conv: {} outputs for {} groups", out, in);
    weight_ = &add_param("weight", {out, 1, kernel, kernel}, Init::trunc_normal(0.02f), true);
  }
  std::string kind() const override { return "Conv2d"; }
  std::string describe() const override { return fmt::format("{} -> {}, groups {}", in_, out_, in_); }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::Conv2d); }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    if (ctx.training) saved_x_ = x;
    return op::conv2d(ctx.exec, x, dense(), nullptr, g_);
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
    const Tensor w = dense();
    Tensor dw = Tensor::zeros(w.shape());
    Tensor dx = op::conv2d_backward(ctx.exec, saved_x_, w, g_, dy, true, &dw, nullptr);
    if (Tensor* g = grad_of(weight_)) {  // on the host, where the gradient may not live (nn/module.h)
      const int64_t per = out_ / in_, kk = int64_t{g_.kernel_h} * g_.kernel_w;
      const Tensor dwh = dw.to(Device::CPU);
      add_on_host(*g, [&](float* gp) {
        for (int64_t o = 0; o < out_; ++o)
          for (int64_t k = 0; k < kk; ++k) gp[o * kk + k] += dwh.data()[(o * in_ + o / per) * kk + k];
      });
    }
    saved_x_ = Tensor();
    return dx;
  }

 private:
  // Cached with the weight until it changes: built on the host (where the weight may not live), and
  // a pass replayed as a CUDA graph must not copy between host and device.
  Tensor dense() const {
    const Tensor& weight = v(weight_);
    if (auto cached = weight.derived("strip_dense_kernel")) return *std::static_pointer_cast<Tensor>(cached);
    const int64_t per = out_ / in_, kk = int64_t{g_.kernel_h} * g_.kernel_w;
    Tensor w = Tensor::zeros({out_, in_, g_.kernel_h, g_.kernel_w});
    const Tensor grouped = weight.to(Device::CPU);
    for (int64_t o = 0; o < out_; ++o)
      for (int64_t k = 0; k < kk; ++k) w.data()[(o * in_ + o / per) * kk + k] = grouped.data()[o * kk + k];
    auto k = std::make_shared<Tensor>(w.to(weight.device()));
    weight.set_derived("strip_dense_kernel", k);
    return *k;
  }
  int64_t in_, out_;
  ConvGeometry g_;
  Parameter* weight_;
  Tensor saved_x_;
};

class StripMlpNet : public Module {
 public:
  explicit StripMlpNet(const MetaFormerConfig& c) {
    MF_CHECK(c.num_stages() == 4, "model '{}': Strip-MLP has 4 stages, not {}", c.name, c.num_stages());
    for (size_t s = 1; s < 4; ++s)
      MF_CHECK(c.dims[s] == 2 * c.dims[s - 1], "model '{}': Strip-MLP doubles the width at each stage ({} -> {} given)",
               c.name, c.dims[s - 1], c.dims[s]);
    MF_CHECK(c.stem.kernel_size == c.stem.stride && c.stem.padding == 0 && c.downsample.kernel_size == 2 &&
                 c.downsample.stride == 2 && c.downsample.padding == 0,
             "model '{}': Strip-MLP embeds patches (kernel = stride, no padding) and merges 2x2 patches", c.name);
    MF_CHECK(c.mlp_ratio == static_cast<int>(c.mlp_ratio), "model '{}': Strip-MLP's alpha (mlp ratio) is an integer, "
             "not {}", c.name, c.mlp_ratio);
    const int p = c.stem.kernel_size;
    patch_embed_ = add_child("patch_embed", std::make_unique<Conv2d>(c.in_chans, c.dims[0], p, p, 0, false));
    patch_embed_->set_needs_input_grad(false);
    // The authors' grids: img_size // patch_size, then halved (int) per stage.
    int64_t grid = c.input.size / p;
    for (size_t s = 0; s < 4; ++s) {
      MF_CHECK(grid >= 1, "model '{}': input size {} leaves no tokens in stage {}", c.name, c.input.size, s);
      blocks_[s] = add_child(fmt::format("blocks{}", s + 1), std::make_unique<Sequential>());
      for (int b = 0; b < c.depths[s]; ++b) blocks_[s]->append(std::make_unique<BasicBlock>(c, s, grid));
      grid /= 2;
    }
    for (size_t s = 0; s < 3; ++s)
      merging_[s] = add_child(fmt::format("merging{}", s + 1),
                              std::make_unique<Conv2d>(c.dims[s], c.dims[s + 1], 2, 2, 0, false));
    s1_28_ = add_child("conv_s1_28", std::make_unique<GroupedConv>(c.dims[1], c.dims[2], 2));
    s1_14_ = add_child("conv_s1_14", std::make_unique<GroupedConv>(c.dims[2], c.dims[3], 2));
    s2_14_ = add_child("conv_s2_14", std::make_unique<GroupedConv>(c.dims[2], c.dims[3], 2));
    head_ = add_child("head", std::make_unique<Linear>(c.dims[3], c.num_classes, true));
    norm_ = add_child("norm", std::make_unique<Norm>(c.head.norm, c.dims[3]));
  }
  std::string kind() const override { return "StripMLPNet"; }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::GlobalAvgPool);
    ops.insert(OpKind::ScaledResidual);
  }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor y = blocks_[0]->run(ctx, patch_embed_->run(ctx, x));
    y = merging_[0]->run(ctx, y);
    const Tensor s1_14 = s1_28_->run(ctx, y);
    const Tensor s1_7 = s1_14_->run(ctx, s1_14);
    y = merging_[1]->run(ctx, blocks_[1]->run(ctx, y));
    const Tensor s2_7 = s2_14_->run(ctx, y);
    y = merging_[2]->run(ctx, blocks_[2]->run(ctx, add(ctx, y, s1_14)));
    y = blocks_[3]->run(ctx, add(ctx, add(ctx, y, s1_7), s2_7));
    y = norm_->run(ctx, y);
    if (ctx.training) saved_shape_ = y.shape();
    return head_->run(ctx, op::global_avg_pool(ctx.exec, y));
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const Tensor d_pool = head_->backward(ctx, dy);
    const Tensor d4 = blocks_[3]->backward(ctx, norm_->backward(ctx, op::global_avg_pool_backward(ctx.exec, d_pool, saved_shape_)));
    // d4 reaches merging3's output and both shortcuts into stage 4.
    const Tensor d3 = blocks_[2]->backward(ctx, merging_[2]->backward(ctx, d4));  // into (merging2 out + s1_14)
    const Tensor d_m2 = add(ctx, d3, s2_14_->backward(ctx, d4));
    const Tensor d2 = blocks_[1]->backward(ctx, merging_[1]->backward(ctx, d_m2));
    const Tensor d_s1_14 = add(ctx, d3, s1_14_->backward(ctx, d4));
    const Tensor d_m1 = add(ctx, d2, s1_28_->backward(ctx, d_s1_14));
    return patch_embed_->backward(ctx, blocks_[0]->backward(ctx, merging_[0]->backward(ctx, d_m1)));
  }

 private:
  Conv2d* patch_embed_;
  Sequential* blocks_[4];
  Conv2d* merging_[3];
  GroupedConv *s1_28_, *s1_14_, *s2_14_;
  Linear* head_;
  Norm* norm_;
  Shape saved_shape_;
};

}  // namespace

std::unique_ptr<Module> make_stripmlp_net(const MetaFormerConfig& c) { return std::make_unique<StripMlpNet>(c); }

}  // namespace mf
