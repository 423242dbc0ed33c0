#include "model/affnet.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "mixers/mixer.h"
#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/sequential.h"

namespace mf {

namespace {

const NormSpec kBatchNorm{"batch_norm", 1e-5, true, 0.1};  // cvnets' default normalisation

// cvnets' make_divisible (from TensorFlow's MobileNet): round to a multiple of 8, never more than
// 10% below the value.
int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t r = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (static_cast<double>(r) < 0.9 * v) r += divisor;
  return r;
}

// ConvLayer's "block": conv (no bias), norm (BatchNorm2d), act (optional). The conv is a Linear for
// 1×1 stride-1 kernels (the same weight [out, in, 1, 1]), a depthwise or a dense convolution
// otherwise. At inference the BatchNorm is folded into the conv's weight and bias.
class ConvNormAct : public Module {
 public:
  enum class Kind { pointwise, depthwise, dense };
  ConvNormAct(int64_t in, int64_t out, int kernel, int stride, Kind kind, bool act, const std::string& act_name)
      : kind_(kind) {
    if (kind == Kind::pointwise) {
      pointwise_ = add_child("conv", std::make_unique<Linear>(in, out, false, /*conv1x1=*/true));
    } else if (kind == Kind::depthwise) {
      depthwise_ = add_child("conv", std::make_unique<DepthwiseConv2d>(in, kernel, kernel / 2, false, stride));
    } else {
      dense_ = add_child("conv", std::make_unique<Conv2d>(in, out, kernel, stride, kernel / 2, false));
    }
    norm_ = add_child("norm", std::make_unique<Norm>(kBatchNorm, out));
    if (act) act_ = add_child("act", make_activation(act_name));
  }
  std::string kind() const override { return "Sequential"; }
  void set_needs_input_grad(bool v) {
    if (dense_) dense_->set_needs_input_grad(v);
  }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    if (ctx.training) {
      Tensor y = norm_->run(ctx, conv().run(ctx, x));
      if (act_) act_->apply_(ctx, y);
      return y;
    }
    const Tensor& w = conv_weight();
    auto [fw, fb] = fold_batch_norm(w, nullptr, *norm_);
    if (kind_ == Kind::pointwise)  // the activation fused into the GEMM
      return op::linear_act(ctx.exec, x, fw, &fb, act_ ? act_->params() : Activation{});
    Tensor y = kind_ == Kind::depthwise ? op::depthwise_conv2d(ctx.exec, x, fw, &fb, depthwise_->geometry())
                                        : op::conv2d(ctx.exec, x, fw, &fb, dense_->geometry());
    if (act_) op::activation_(ctx.exec, y, act_->params());
    return y;
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = act_ ? act_->backward(ctx, dy) : dy;
    return conv().backward(ctx, norm_->backward(ctx, d));
  }

 private:
  Module& conv() {
    if (pointwise_) return *pointwise_;
    if (depthwise_) return *depthwise_;
    return *dense_;
  }
  const Tensor& conv_weight() {
    if (pointwise_) return pointwise_->weight()->value;
    if (depthwise_) return depthwise_->weight()->value;
    return dense_->weight()->value;
  }
  Kind kind_;
  Linear* pointwise_ = nullptr;
  DepthwiseConv2d* depthwise_ = nullptr;
  Conv2d* dense_ = nullptr;
  Norm* norm_;
  ActivationLayer* act_ = nullptr;
};

// cvnets' ConvLayer: its layers live under "block".
class ConvLayer : public Module {
 public:
  ConvLayer(int64_t in, int64_t out, int kernel, int stride, ConvNormAct::Kind kind, bool act, const std::string& a)
      : in_(in), out_(out), kernel_(kernel), stride_(stride) {
    block_ = add_child("block", std::make_unique<ConvNormAct>(in, out, kernel, stride, kind, act, a));
  }
  std::string kind() const override { return "ConvLayer"; }
  std::string describe() const override {
    return fmt::format("{} -> {}, {}x{}, stride {}", in_, out_, kernel_, kernel_, stride_);
  }
  Tensor forward(Ctx& ctx, const Tensor& x) override { return block_->run(ctx, x); }
  Tensor backward(Ctx& ctx, const Tensor& dy) override { return block_->backward(ctx, dy); }
  ConvNormAct& block() { return *block_; }

 private:
  int64_t in_, out_;
  int kernel_, stride_;
  ConvNormAct* block_;
};

// InvertedResidual's "block": exp_1x1 (when the ratio is not 1), conv_3x3 (depthwise), red_1x1.
class InvertedResidualBody : public Module {
 public:
  InvertedResidualBody(int64_t in, int64_t out, int stride, double ratio, const std::string& act) {
    const int64_t hidden = make_divisible(std::round(static_cast<double>(in) * ratio));
    if (ratio != 1.0)
      exp_ = add_child("exp_1x1", std::make_unique<ConvLayer>(in, hidden, 1, 1, ConvNormAct::Kind::pointwise, true, act));
    else
      MF_CHECK(hidden == in, "an inverted residual without expansion needs {} = {} channels", hidden, in);
    dw_ = add_child("conv_3x3",
                    std::make_unique<ConvLayer>(hidden, hidden, 3, stride, ConvNormAct::Kind::depthwise, true, act));
    red_ = add_child("red_1x1", std::make_unique<ConvLayer>(hidden, out, 1, 1, ConvNormAct::Kind::pointwise, false, act));
  }
  std::string kind() const override { return "Sequential"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    return red_->run(ctx, dw_->run(ctx, exp_ ? exp_->run(ctx, x) : x));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = dw_->backward(ctx, red_->backward(ctx, dy));
    return exp_ ? exp_->backward(ctx, d) : d;
  }

 private:
  ConvLayer* exp_ = nullptr;
  ConvLayer* dw_;
  ConvLayer* red_;
};

// MobileNetV2's inverted residual, with a skip when the stride is 1 and the width stays.
class InvertedResidual : public Module {
 public:
  InvertedResidual(int64_t in, int64_t out, int stride, double ratio, const std::string& act)
      : in_(in), out_(out), stride_(stride), ratio_(ratio), skip_(stride == 1 && in == out) {
    body_ = add_child("block", std::make_unique<InvertedResidualBody>(in, out, stride, ratio, act));
  }
  std::string kind() const override { return "InvertedResidual"; }
  std::string describe() const override {
    return fmt::format("{} -> {}, stride {}, expand {:g}{}", in_, out_, stride_, ratio_, skip_ ? ", skip" : "");
  }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor y = body_->run(ctx, x);
    return skip_ ? op::scaled_residual(ctx.exec, x, nullptr, y, nullptr) : y;
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = body_->backward(ctx, dy);
    return skip_ ? op::scaled_residual_new(ctx.exec, d, nullptr, dy, nullptr) : d;
  }

 private:
  int64_t in_, out_;
  int stride_;
  double ratio_;
  bool skip_;
  InvertedResidualBody* body_;
};

// AFFNet's Block (double_skip off): x + filter(norm2(mlp(norm1(x)))).
class AffUnit : public Module {
 public:
  AffUnit(int64_t dim, int64_t ffn_dim, const AffNetSpec& spec) {
    norm1_ = add_child("norm1", std::make_unique<Norm>(spec.attn_norm, dim));
    nlohmann::json options{{"num_blocks", 8}, {"act", spec.act}, {"sparsity_threshold", 0.01}};
    filter_ = add_child("filter", MixerRegistry::get().create("aff", MixerContext{dim, 0, 0, 0, options}));
    norm2_ = add_child("norm2", std::make_unique<Norm>(spec.attn_norm, dim));
    mlp_ = add_child("mlp", std::make_unique<InvertedResidual>(dim, dim, 1, static_cast<double>(ffn_dim) / dim, spec.act));
  }
  std::string kind() const override { return "Block"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor t = norm2_->run(ctx, mlp_->run(ctx, norm1_->run(ctx, x)));
    return op::scaled_residual(ctx.exec, x, nullptr, filter_->run(ctx, t), nullptr);
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = norm1_->backward(ctx, mlp_->backward(ctx, norm2_->backward(ctx, filter_->backward(ctx, dy))));
    return op::scaled_residual_new(ctx.exec, d, nullptr, dy, nullptr);
  }

 private:
  Norm *norm1_, *norm2_;
  Module* filter_;
  InvertedResidual* mlp_;
};

// AFFBlock: global_rep (Blocks, then a norm), conv_proj, and fusion over the channels of
// [input, conv_proj's output].
class AffBlock : public Module {
 public:
  AffBlock(int64_t dim, int64_t ffn_dim, int blocks, const AffNetSpec& spec) : dim_(dim) {
    global_ = add_child("global_rep", std::make_unique<Sequential>());
    for (int b = 0; b < blocks; ++b) global_->append(std::make_unique<AffUnit>(dim, ffn_dim, spec));
    global_->append(std::make_unique<Norm>(spec.attn_norm, dim));
    proj_ = add_child("conv_proj", std::make_unique<ConvLayer>(dim, dim, 1, 1, ConvNormAct::Kind::pointwise, false, spec.act));
    fusion_ =
        add_child("fusion", std::make_unique<ConvLayer>(2 * dim, dim, 1, 1, ConvNormAct::Kind::pointwise, true, spec.act));
  }
  std::string kind() const override { return "AFFBlock"; }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::ChannelSlice);
    ops.insert(OpKind::ScaledResidual);
  }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor fm = proj_->run(ctx, global_->run(ctx, x));
    return fusion_->run(ctx, op::concat_channels(ctx.exec, x, fm));  // torch.cat((res, fm), dim=1)
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d_both = fusion_->backward(ctx, dy);
    Tensor d_res = op::channel_slice(ctx.exec, d_both, 0, dim_);
    Tensor d_x = global_->backward(ctx, proj_->backward(ctx, op::channel_slice(ctx.exec, d_both, dim_, dim_)));
    return op::scaled_residual(ctx.exec, d_x, nullptr, d_res, nullptr);
  }

 private:
  int64_t dim_;
  Sequential* global_;
  ConvLayer* proj_;
  ConvLayer* fusion_;
};

// classifier: global average pool, then fc.
class Classifier : public Module {
 public:
  Classifier(int64_t in, int num_classes) { fc_ = add_child("fc", std::make_unique<Linear>(in, num_classes, true)); }
  std::string kind() const override { return "Sequential"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::GlobalAvgPool); }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    if (ctx.training) saved_shape_ = x.shape();
    return fc_->run(ctx, op::global_avg_pool(ctx.exec, x));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    return op::global_avg_pool_backward(ctx.exec, fc_->backward(ctx, dy), saved_shape_);
  }

 private:
  Linear* fc_;
  Shape saved_shape_;
};

struct ModeCfg {
  double expand;   // mv2_exp_mult
  std::vector<AffNetLayer> layers;
};

// The authors' table (models/classification/config/affnet.py); last_layer_exp_factor is 4 in all.
ModeCfg mode_cfg(const AffNetSpec& spec) {
  static const std::map<std::string, ModeCfg> modes{
      {"xx_small",
       {2, {{false, 32, 1, 1, 0}, {false, 48, 3, 2, 0}, {true, 64, 2, 2, 128}, {true, 104, 4, 2, 208},
            {true, 144, 3, 2, 288}}}},
      {"x_small",
       {4, {{false, 32, 1, 1, 0}, {false, 48, 3, 2, 0}, {true, 96, 2, 2, 192}, {true, 160, 4, 2, 320},
            {true, 192, 3, 2, 384}}}},
      {"small",
       {4, {{false, 32, 1, 1, 0}, {false, 64, 3, 2, 0}, {true, 128, 2, 2, 256}, {true, 256, 4, 2, 512},
            {true, 320, 3, 2, 640}}}},
  };
  if (spec.mode == "custom") return {spec.expand_ratio, spec.layers};
  auto it = modes.find(spec.mode);
  MF_CHECK(it != modes.end(), "unknown AFFNet mode '{}' (known: xx_small, x_small, small, custom)", spec.mode);
  return it->second;
}

}  // namespace

std::vector<std::pair<std::string, std::unique_ptr<Module>>> make_affnet_layers(const MetaFormerConfig& c) {
  const ModeCfg m = mode_cfg(c.affnet);
  const std::string& act = c.affnet.act;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> out;
  auto stem = std::make_unique<ConvLayer>(c.in_chans, 16, 3, 2, ConvNormAct::Kind::dense, true, act);
  stem->block().set_needs_input_grad(false);  // the input is data
  out.emplace_back("conv_1", std::move(stem));
  int64_t in = 16;
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const AffNetLayer& l = m.layers[i];
    auto layer = std::make_unique<Sequential>();
    if (!l.aff) {
      for (int b = 0; b < l.blocks; ++b, in = l.out)
        layer->append(std::make_unique<InvertedResidual>(in, l.out, b == 0 ? l.stride : 1, m.expand, act));
    } else {
      if (l.stride == 2) layer->append(std::make_unique<InvertedResidual>(in, l.out, 2, m.expand, act));
      in = l.out;
      layer->append(std::make_unique<AffBlock>(l.out, l.ffn, l.blocks, c.affnet));
    }
    out.emplace_back(fmt::format("layer_{}", i + 1), std::move(layer));
  }
  const int64_t exp = std::min<int64_t>(4 * in, 960);
  out.emplace_back("conv_1x1_exp", std::make_unique<ConvLayer>(in, exp, 1, 1, ConvNormAct::Kind::pointwise, true, act));
  out.emplace_back("classifier", std::make_unique<Classifier>(exp, c.num_classes));
  return out;
}

}  // namespace mf
