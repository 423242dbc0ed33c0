// RaftMLP (Tatsunami & Taki, okojoalg/raft-mlp), the serial-permuted ("ser_pm") model with the
// cross-scale MLP embedding, as the authors' RaftMLP class builds it with shortcut=False:
//   levels.{i}.fn.0.fc                 cross-scale embedding: a Linear over unfolded k×k patches
//   levels.{i}.fn.{2+b}.1.{norm.1, fn} vertical raft token MLP, x + fn(LN(x))
//   levels.{i}.fn.{2+b}.3.{norm.1, fn} horizontal raft token MLP
//   levels.{i}.fn.{2+b}.5.{norm, fn}   channel MLP, x + fn(LN(x))
//   heads.0.1                          LayerNorm on every token, then the mean over tokens
//   classifier                         Linear
// (Dotted child names stand for the authors' parameter-free nn.Sequential wrappers.)
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "mixers/mixer.h"
#include "mixers/raft.h"
#include "model/custom_layouts.h"
#include "nn/norm.h"

namespace mf {

namespace {

// The authors' CrossScaleMLPEmbedding: for each kernel k (stride p, padding (k - p)/2) the unfolded
// patches, concatenated, through one Linear `fc` [C, Σ_k Cin·k²]. Each kernel's block of fc's columns
// is a convolution kernel [C, Cin, k, k] (nn.Unfold orders a patch (c, i, j)); the patches of every k
// are centred on the same stride-p cell, so the sum of the convolutions is one convolution with the
// largest kernel K, each smaller kernel embedded at offset (K - k)/2 — which is how it runs here.
class CrossScaleEmbedding : public Module {
 public:
  CrossScaleEmbedding(int64_t in, int64_t out, std::vector<int> kernels, bool needs_input_grad)
      : in_(in), out_(out), kernels_(std::move(kernels)), needs_input_grad_(needs_input_grad) {
    patch_ = kernels_[0];
    max_kernel_ = *std::max_element(kernels_.begin(), kernels_.end());
    int64_t cols = 0;
    for (int k : kernels_) cols += in * k * k;
    // "fc.weight": the authors' Linear is a child named fc; it holds nothing else.
    weight_ = &add_param("fc.weight", {out, cols}, Init::trunc_normal(0.02f), true);
    bias_ = &add_param("fc.bias", {out}, Init::zeros(), false);
  }
  std::string kind() const override { return "CrossScaleMLPEmbedding"; }
  std::string describe() const override {
    return fmt::format("{} -> {}, kernels [{}], stride {}", in_, out_, fmt::join(kernels_, ", "), patch_);
  }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::Conv2d); }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    MF_CHECK(x.dim(1) % patch_ == 0 && x.dim(2) % patch_ == 0,
             "{}: a {}x{} input does not divide into {}x{} patches (the authors' code resizes it; this engine does "
             "not)", path(), x.dim(1), x.dim(2), patch_, patch_);
    if (ctx.training) saved_x_ = x;
    return op::conv2d(ctx.exec, x, kernel(), &v(bias_), geometry());
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
    const Tensor k = kernel();
    Tensor dk = Tensor::zeros(k.shape());
    Tensor dx = op::conv2d_backward(ctx.exec, saved_x_, k, geometry(), dy, needs_input_grad_, &dk, grad_of(bias_));
    if (Tensor* g = grad_of(weight_)) {  // on the host, where the gradient may not live (nn/module.h)
      const Tensor dkh = dk.to(Device::CPU);
      const int64_t cols = g->dim(1);
      add_on_host(*g, [&](float* gp) {
        int64_t col = 0;
        for_each_tap([&](int64_t o, int64_t kc, int64_t tap) { gp[o * cols + kc] += dkh.data()[tap]; }, col);
      });
    }
    saved_x_ = Tensor();
    return dx;
  }

 private:
  ConvGeometry geometry() const {
    const int pad = (max_kernel_ - patch_) / 2;
    return {max_kernel_, max_kernel_, patch_, patch_, pad, pad};
  }
  // Calls f(output channel, column of fc.weight, index into the [C, Cin, K, K] kernel) for every tap.
  template <typename F>
  void for_each_tap(F f, int64_t& col) const {
    const int64_t K = max_kernel_;
    for (int k : kernels_) {
      const int64_t off = (K - k) / 2;
      for (int64_t o = 0; o < out_; ++o)
        for (int64_t c = 0; c < in_; ++c)
          for (int64_t i = 0; i < k; ++i)
            for (int64_t j = 0; j < k; ++j)
              f(o, col + (c * k + i) * k + j, ((o * in_ + c) * K + off + i) * K + off + j);
      col += in_ * k * k;
    }
  }
  // The combined kernel, cached until the weight changes.
  Tensor kernel() const {
    const Tensor& w = v(weight_);
    if (auto cached = w.derived("cross_scale_kernel")) return *std::static_pointer_cast<Tensor>(cached);
    auto k = std::make_shared<Tensor>(Tensor::zeros({out_, in_, max_kernel_, max_kernel_}));
    int64_t col = 0;
    const Tensor wh = w.to(Device::CPU);  // built on the host, where the weight may not live
    // Summed: the kernels overlap at the centre, and each contributes there.
    for_each_tap([&](int64_t o, int64_t kc, int64_t tap) { k->data()[tap] += wh.data()[o * wh.dim(1) + kc]; }, col);
    w.set_derived("cross_scale_kernel", k);
    return *k;
  }
  int64_t in_, out_;
  std::vector<int> kernels_;
  int patch_, max_kernel_;
  bool needs_input_grad_;
  Parameter* weight_;
  Parameter* bias_;
  Tensor saved_x_;
};

// The authors' PermutedBlock: x + fn(LN(x)), its LayerNorm over the channels in raft-minor order
// (norm.1), its MLP a raft token MLP (fn).
class RaftTokenBlock : public Module {
 public:
  RaftTokenBlock(RaftAxisMlp::Axis axis, int64_t raft, int64_t dim, int64_t height, int64_t width, int64_t expansion,
                 const NormSpec& norm)
      : raft_(raft) {
    norm_ = add_child("norm.1", std::make_unique<Norm>(norm, dim));
    mlp_ = add_child("fn", std::make_unique<RaftAxisMlp>(axis, raft, dim, height, width, expansion));
  }
  std::string kind() const override { return "PermutedBlock"; }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::Permute);
    ops.insert(OpKind::ScaledResidual);
  }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor m = mlp_->mix(ctx, norm_->run(ctx, raft_minor(ctx, x, false)), /*raft_minor_input=*/true);
    return op::scaled_residual(ctx.exec, x, nullptr, m, nullptr);
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = raft_minor(ctx, norm_->backward(ctx, mlp_->backward(ctx, dy)), true);
    return op::scaled_residual(ctx.exec, dy, nullptr, d, nullptr);
  }

 private:
  // [B, H, W, r, C/r] <-> [B, H, W, C/r, r] (the same swap both ways).
  Tensor raft_minor(Ctx& ctx, const Tensor& x, bool back) const {
    const int64_t k = x.dim(3) / raft_;
    const Shape five = back ? Shape{x.dim(0), x.dim(1), x.dim(2), k, raft_} : Shape{x.dim(0), x.dim(1), x.dim(2), raft_, k};
    return op::permute(ctx.exec, x.reshape(five), {0, 1, 2, 4, 3}).reshape(x.shape());
  }
  int64_t raft_;
  Norm* norm_;
  RaftAxisMlp* mlp_;
};

// The authors' ChannelBlock: x + fn(LN(x)).
class ChannelBlock : public Module {
 public:
  ChannelBlock(int64_t dim, int64_t hidden, const NormSpec& norm) {
    norm_ = add_child("norm", std::make_unique<Norm>(norm, dim));
    mlp_ = add_child("fn", std::make_unique<TorchSeqMlp>(dim, hidden));
  }
  std::string kind() const override { return "ChannelBlock"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::ScaledResidual); }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    return op::scaled_residual(ctx.exec, x, nullptr, mlp_->run(ctx, norm_->run(ctx, x)), nullptr);
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    return op::scaled_residual(ctx.exec, dy, nullptr, norm_->backward(ctx, mlp_->backward(ctx, dy)), nullptr);
  }

 private:
  Norm* norm_;
  TorchSeqMlp* mlp_;
};

// One serial-permuted block: vertical (1), horizontal (3), channel (5). The token MLPs are tied to
// the nominal grid; on another grid the authors resize the token stream bicubically to it before
// them (RaftShrink) and back after them (RaftExpansion), and so does this block.
class RaftBlock : public Module {
 public:
  RaftBlock(int64_t dim, int64_t height, int64_t width, int64_t raft, int64_t expansion, int64_t hidden,
            const NormSpec& norm)
      : height_(height), width_(width) {
    using Axis = RaftAxisMlp::Axis;
    parts_.push_back(add_child("1", std::make_unique<RaftTokenBlock>(Axis::vertical, raft, dim, height, width,
                                                                     expansion, norm)));
    parts_.push_back(add_child("3", std::make_unique<RaftTokenBlock>(Axis::horizontal, raft, dim, height, width,
                                                                     expansion, norm)));
    parts_.push_back(add_child("5", std::make_unique<ChannelBlock>(dim, hidden, norm)));
  }
  std::string kind() const override { return "RaftBlock"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::ResizeBicubic); }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const int64_t h = x.dim(1), w = x.dim(2);
    const bool resize = h != height_ || w != width_;
    if (ctx.training) saved_hw_ = {h, w};
    Tensor y = resize ? op::resize_bicubic(ctx.exec, x, height_, width_) : x;
    y = parts_[1]->run(ctx, parts_[0]->run(ctx, y));
    if (resize) y = op::resize_bicubic(ctx.exec, y, h, w);
    return parts_[2]->run(ctx, y);
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const auto [h, w] = saved_hw_;
    const bool resize = h != height_ || w != width_;
    Tensor d = parts_[2]->backward(ctx, dy);
    if (resize) d = op::resize_bicubic_backward(ctx.exec, d, height_, width_);
    d = parts_[0]->backward(ctx, parts_[1]->backward(ctx, d));
    return resize ? op::resize_bicubic_backward(ctx.exec, d, h, w) : d;
  }

 private:
  int64_t height_, width_;  // the nominal token grid
  std::pair<int64_t, int64_t> saved_hw_{0, 0};
  std::vector<Module*> parts_;
};

class RaftMlpNet : public Module {
 public:
  explicit RaftMlpNet(const MetaFormerConfig& c) {
    int64_t size = c.input.size, in = c.in_chans;
    for (size_t s = 0; s < c.num_stages(); ++s) {
      MixerOptions o("raft", c.mixers[s].options);
      const int64_t raft = o.get_int("raft_size", 2), expansion = o.get_int("expansion", 2);
      o.finish();
      const int64_t dim = c.dims[s];
      MF_CHECK(raft >= 1 && dim % raft == 0, "model '{}': raft_size {} must divide the {} channels of stage {}", c.name,
               raft, dim, s);
      const auto& kernels = c.embed_kernels[s];
      size = (size + kernels[0] - 1) / kernels[0];  // the authors' ceil(size / patch)
      const std::string level = fmt::format("levels.{}.fn", s);
      embeds_.push_back(add_child(level + ".0", std::make_unique<CrossScaleEmbedding>(in, dim, kernels, s > 0)));
      std::vector<RaftBlock*> blocks;
      for (int b = 0; b < c.depths[s]; ++b)
        blocks.push_back(add_child(fmt::format("{}.{}", level, 2 + b),
                                   std::make_unique<RaftBlock>(dim, size, size, raft, expansion,
                                                               static_cast<int64_t>(c.mlp_ratio * dim), c.norms[s])));
      blocks_.push_back(blocks);
      in = dim;
    }
    norm_ = add_child("heads.0.1", std::make_unique<Norm>(c.head.norm, in));
    classifier_ = add_child("classifier", std::make_unique<Linear>(in, c.num_classes, true));
  }
  std::string kind() const override { return "RaftMLP"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::GlobalAvgPool); }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor y = x;
    for (size_t s = 0; s < embeds_.size(); ++s) {
      y = embeds_[s]->run(ctx, y);
      for (RaftBlock* b : blocks_[s]) y = b->run(ctx, y);
    }
    y = norm_->run(ctx, y);
    if (ctx.training) saved_shape_ = y.shape();
    return classifier_->run(ctx, op::global_avg_pool(ctx.exec, y));
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = norm_->backward(ctx, op::global_avg_pool_backward(ctx.exec, classifier_->backward(ctx, dy), saved_shape_));
    for (size_t s = embeds_.size(); s-- > 0;) {
      for (auto it = blocks_[s].rbegin(); it != blocks_[s].rend(); ++it) d = (*it)->backward(ctx, d);
      d = embeds_[s]->backward(ctx, d);
    }
    return d;
  }

 private:
  std::vector<CrossScaleEmbedding*> embeds_;
  std::vector<std::vector<RaftBlock*>> blocks_;
  Norm* norm_;
  Linear* classifier_;
  Shape saved_shape_;
};

}  // namespace

std::unique_ptr<Module> make_raftmlp_net(const MetaFormerConfig& c) { return std::make_unique<RaftMlpNet>(c); }

}  // namespace mf
