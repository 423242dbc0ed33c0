// CAS-ViT (Zhang et al., 2024; Tianfang-Zhang/CAS-ViT), as the authors' RCViT class builds it for
// classification (fork_feat=False, distillation=True):
//   patch_embed.{0..5}            3×3 stride-2 conv to dim/2, BN, ReLU, 3×3 stride-2 conv to dim, BN, ReLU
//   network.{0, 2, 4, 6}.{b}      AdditiveBlock:
//       x + local_perception(x)   network.{0..4}: 1×1 conv, BN, depthwise 3×3, GELU, 1×1 conv
//       x + attn(norm1(x))        the `additive` mixer (mixers/additive.h); norm1 a BatchNorm
//       x + mlp(norm2(x))         fc1, GELU, fc2 (1×1 convs); norm2 a BatchNorm
//   network.{1, 3, 5}             Embedding: proj (3×3 stride-2 conv), norm (BN)
//   norm, head, dist_head         BN, mean over positions, the mean of the two heads' logits (the
//                                 authors' eval output; training here uses that mean as well)
// Every BatchNorm that follows a convolution is folded into it at inference.
#include <fmt/format.h>

#include "mixers/additive.h"
#include "model/custom_layouts.h"
#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/sequential.h"

namespace mf {

namespace {

Tensor add(Ctx& ctx, const Tensor& a, const Tensor& b) { return op::scaled_residual_new(ctx.exec, a, nullptr, b, nullptr); }

class Seq : public Module {
 public:
  explicit Seq(std::string kind = "Sequential") : kind_(std::move(kind)) {}
  std::string kind() const override { return kind_; }
  template <typename T>
  T* add(const std::string& name, std::unique_ptr<T> child) {
    return add_child(name, std::move(child));
  }

 private:
  std::string kind_;
};

// patch_embed: (conv, BN, ReLU) twice, each BN folded into its conv at inference.
class Stem : public Module {
 public:
  Stem(int in, int dim, const ConvSpec& spec) {
    auto* s = add_child("patch_embed", std::make_unique<Seq>());
    conv1_ = s->add("0", std::make_unique<Conv2d>(in, dim / 2, spec.kernel_size, spec.stride, spec.padding, true));
    conv1_->set_needs_input_grad(false);
    bn1_ = s->add("1", std::make_unique<Norm>(*spec.norm, dim / 2));
    act1_ = s->add("2", make_activation(spec.act));
    conv2_ = s->add("3", std::make_unique<Conv2d>(dim / 2, dim, spec.kernel_size, spec.stride, spec.padding, true));
    bn2_ = s->add("4", std::make_unique<Norm>(*spec.norm, dim));
    act2_ = s->add("5", make_activation(spec.act));
  }
  std::string kind() const override { return "Stem"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const Tensor h = act1_->run(ctx, conv_then_norm(ctx, *conv1_, bn1_, x));
    return act2_->run(ctx, conv_then_norm(ctx, *conv2_, bn2_, h));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const Tensor d = conv2_->backward(ctx, bn2_->backward(ctx, act2_->backward(ctx, dy)));
    return conv1_->backward(ctx, bn1_->backward(ctx, act1_->backward(ctx, d)));
  }

 private:
  Conv2d *conv1_, *conv2_;
  Norm *bn1_, *bn2_;
  ActivationLayer *act1_, *act2_;
};

// LocalIntegration: 1×1 conv, BN (folded into it at inference), depthwise 3×3, GELU, 1×1 conv.
class LocalIntegration : public Module {
 public:
  LocalIntegration(int64_t dim, const NormSpec& norm) {
    auto* n = add_child("network", std::make_unique<Seq>());
    fc1_ = n->add("0", std::make_unique<Linear>(dim, dim, true, true));
    bn_ = n->add("1", std::make_unique<Norm>(norm, dim));
    dw_ = n->add("2", std::make_unique<DepthwiseConv2d>(dim, 3, 1, true));
    act_ = n->add("3", make_activation("gelu"));
    fc2_ = n->add("4", std::make_unique<Linear>(dim, dim, true, true));
  }
  std::string kind() const override { return "LocalIntegration"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor h;
    if (ctx.training) {
      h = bn_->run(ctx, fc1_->run(ctx, x));
    } else {
      const auto [w, b] = fold_batch_norm(fc1_->weight()->value, &fc1_->bias()->value, *bn_);
      h = op::linear(ctx.exec, x, w, &b);
    }
    return fc2_->run(ctx, act_->run(ctx, dw_->run(ctx, h)));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const Tensor d = dw_->backward(ctx, act_->backward(ctx, fc2_->backward(ctx, dy)));
    return fc1_->backward(ctx, bn_->backward(ctx, d));
  }

 private:
  Linear* fc1_;
  Norm* bn_;
  DepthwiseConv2d* dw_;
  ActivationLayer* act_;
  Linear* fc2_;
};

class AdditiveBlock : public Module {
 public:
  AdditiveBlock(const MetaFormerConfig& c, size_t s) {
    const int64_t dim = c.dims[s];
    MixerOptions o("additive", c.mixers[s].options);
    const bool qkv_bias = o.get_bool("qkv_bias", false);
    o.finish();
    local_ = add_child("local_perception", std::make_unique<LocalIntegration>(dim, c.norms[s]));
    norm1_ = add_child("norm1", std::make_unique<Norm>(c.norms[s], dim));
    attn_ = add_child("attn", std::make_unique<AdditiveTokenMixer>(dim, qkv_bias));
    norm2_ = add_child("norm2", std::make_unique<Norm>(c.norms[s], dim));
    auto* mlp = add_child("mlp", std::make_unique<Seq>("Mlp"));
    const auto hidden = static_cast<int64_t>(static_cast<double>(dim) * c.mlp_ratio);
    fc1_ = mlp->add("fc1", std::make_unique<Linear>(dim, hidden, c.mlp_bias, true));
    act_ = mlp->add("act", make_activation(c.mlp_act));
    fc2_ = mlp->add("fc2", std::make_unique<Linear>(hidden, dim, c.mlp_bias, true));
  }
  std::string kind() const override { return "AdditiveBlock"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::ScaledResidual); }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor y = add(ctx, x, local_->run(ctx, x));
    y = add(ctx, y, attn_->run(ctx, norm1_->run(ctx, y)));
    return add(ctx, y, fc2_->run(ctx, fc1_->run_then(ctx, norm2_->run(ctx, y), *act_)));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = add(ctx, dy, norm2_->backward(ctx, fc1_->backward(ctx, act_->backward(ctx, fc2_->backward(ctx, dy)))));
    d = add(ctx, d, norm1_->backward(ctx, attn_->backward(ctx, d)));
    return add(ctx, d, local_->backward(ctx, d));
  }

 private:
  LocalIntegration* local_;
  Norm* norm1_;
  AdditiveTokenMixer* attn_;
  Norm* norm2_;
  Linear* fc1_;
  ActivationLayer* act_;
  Linear* fc2_;
};

// Embedding: proj (3×3 stride-2 conv), norm (BN folded into it at inference).
class Embedding : public Module {
 public:
  Embedding(int64_t in, int64_t out, const ConvSpec& spec) {
    proj_ = add_child("proj", std::make_unique<Conv2d>(in, out, spec.kernel_size, spec.stride, spec.padding, true));
    norm_ = add_child("norm", std::make_unique<Norm>(*spec.norm, out));
  }
  std::string kind() const override { return "Embedding"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override { return conv_then_norm(ctx, *proj_, norm_, x); }
  Tensor backward(Ctx& ctx, const Tensor& dy) override { return proj_->backward(ctx, norm_->backward(ctx, dy)); }

 private:
  Conv2d* proj_;
  Norm* norm_;
};

class CasVitNet : public Module {
 public:
  explicit CasVitNet(const MetaFormerConfig& c) {
    MF_CHECK(c.stem.type == "two_conv" && c.stem.norm && c.downsample.norm && c.downsample.norm_after,
             "model '{}': CAS-ViT's stem is two convs, each with a norm, and its downsampling a conv then a norm",
             c.name);
    stem_ = add_child("", std::make_unique<Stem>(c.in_chans, c.dims[0], c.stem));
    network_ = add_child("network", std::make_unique<Sequential>());
    for (size_t s = 0; s < c.num_stages(); ++s) {
      auto* stage = network_->append(std::make_unique<Sequential>());
      for (int b = 0; b < c.depths[s]; ++b) stage->append(std::make_unique<AdditiveBlock>(c, s));
      if (s + 1 < c.num_stages()) network_->append(std::make_unique<Embedding>(c.dims[s], c.dims[s + 1], c.downsample));
    }
    norm_ = add_child("norm", std::make_unique<Norm>(c.head.norm, c.dims.back()));
    head_ = add_child("head", std::make_unique<Linear>(c.dims.back(), c.num_classes, true));
    dist_head_ = add_child("dist_head", std::make_unique<Linear>(c.dims.back(), c.num_classes, true));
    half_ = Tensor::full({c.num_classes}, 0.5f);
    zero_ = Tensor::zeros({c.num_classes});  // made once: the backend keeps one upload of each
  }
  std::string kind() const override { return "RCViT"; }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::GlobalAvgPool);
    ops.insert(OpKind::ScaledResidual);
    ops.insert(OpKind::ChannelAffine);
  }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const Tensor y = norm_->run(ctx, network_->run(ctx, stem_->run(ctx, x)));
    if (ctx.training) saved_shape_ = y.shape();
    const Tensor pooled = op::global_avg_pool(ctx.exec, y);
    // (head(pooled) + dist_head(pooled)) / 2
    return op::scaled_residual_new(ctx.exec, head_->run(ctx, pooled), &half_, dist_head_->run(ctx, pooled), &half_);
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const Tensor dhalf = op::channel_affine(ctx.exec, dy, half_, zero_);
    const Tensor dpooled = add(ctx, head_->backward(ctx, dhalf), dist_head_->backward(ctx, dhalf));
    const Tensor d = norm_->backward(ctx, op::global_avg_pool_backward(ctx.exec, dpooled, saved_shape_));
    return stem_->backward(ctx, network_->backward(ctx, d));
  }

 private:
  Stem* stem_;
  Sequential* network_;
  Norm* norm_;
  Linear* head_;
  Linear* dist_head_;
  Tensor half_, zero_;
  Shape saved_shape_;
};

}  // namespace

std::unique_ptr<Module> make_casvit_net(const MetaFormerConfig& c) { return std::make_unique<CasVitNet>(c); }

}  // namespace mf
