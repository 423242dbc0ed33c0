// WaveMix (Jeevan & Sethi, pranavphoenix/WaveMix), as the authors' package builds it for ImageNet
// classification (wavemix/classification.py's WaveMix):
//   conv     'pachify' (stem type "patch"): conv.0 3×3 (3 -> C/4), conv.1 3×3 (-> C/2), conv.2 p×p
//            stride p (-> C), conv.3 GELU, conv.4 BatchNorm; or 'strided' (stem type "two_conv"):
//            conv.0 3×3 stride s (3 -> C/2), conv.1 3×3 stride s (-> C). No activation between the
//            convolutions, as theirs.
//   layers.{i}   x + WaveMixBlock(x)  (mixers/wavemix.h)
//   pool.2       mean over tokens, Linear (pool.0 is the pooling, pool.1 a reshape)
#include <fmt/format.h>

#include "mixers/wavemix.h"
#include "model/custom_layouts.h"
#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/sequential.h"

namespace mf {

namespace {

class WaveMixStem : public Module {
 public:
  WaveMixStem(const MetaFormerConfig& c) : patch_(c.stem.type == "patch") {
    const int64_t dim = c.dims[0];
    if (patch_) {
      const int p = c.stem.kernel_size;
      convs_.push_back(add_child("0", std::make_unique<Conv2d>(c.in_chans, dim / 4, 3, 1, 1, true)));
      convs_.push_back(add_child("1", std::make_unique<Conv2d>(dim / 4, dim / 2, 3, 1, 1, true)));
      convs_.push_back(add_child("2", std::make_unique<Conv2d>(dim / 2, dim, p, p, 0, true)));
      act_ = add_child("3", make_activation("gelu"));
      norm_ = add_child("4", std::make_unique<Norm>(*c.stem.norm, dim));
    } else {
      const int s = c.stem.stride;
      convs_.push_back(add_child("0", std::make_unique<Conv2d>(c.in_chans, dim / 2, 3, s, 1, true)));
      convs_.push_back(add_child("1", std::make_unique<Conv2d>(dim / 2, dim, 3, s, 1, true)));
    }
    convs_[0]->set_needs_input_grad(false);  // the image
  }
  std::string kind() const override { return "Sequential"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor y = x;
    for (Conv2d* conv : convs_) y = conv->run(ctx, y);
    if (act_) y = norm_->run(ctx, act_->run(ctx, y));
    return y;
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = act_ ? act_->backward(ctx, norm_->backward(ctx, dy)) : dy;
    for (auto it = convs_.rbegin(); it != convs_.rend(); ++it) d = (*it)->backward(ctx, d);
    return d;
  }

 private:
  bool patch_;
  std::vector<Conv2d*> convs_;
  ActivationLayer* act_ = nullptr;
  Norm* norm_ = nullptr;
};

// x + block(x) for each block.
class ResidualBlocks : public Module {
 public:
  std::string kind() const override { return "ModuleList"; }
  void append(std::unique_ptr<WaveMixBlock> b) { blocks_.push_back(add_child(std::to_string(blocks_.size()), std::move(b))); }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::ScaledResidual); }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor y = x;
    for (WaveMixBlock* b : blocks_) y = op::scaled_residual(ctx.exec, y, nullptr, b->run(ctx, y), nullptr);
    return y;
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = dy;
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it)
      d = op::scaled_residual(ctx.exec, d, nullptr, (*it)->backward(ctx, d), nullptr);
    return d;
  }

 private:
  std::vector<WaveMixBlock*> blocks_;
};

// nn.Sequential(AdaptiveAvgPool2d(1), Rearrange, Linear): only "2" has parameters.
class PoolHead : public Module {
 public:
  PoolHead(int64_t dim, int64_t classes) { fc_ = add_child("2", std::make_unique<Linear>(dim, classes, true)); }
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

class WaveMixNet : public Module {
 public:
  explicit WaveMixNet(const MetaFormerConfig& c) : config_(c) {
    stem_ = add_child("conv", std::make_unique<WaveMixStem>(c));
    layers_ = add_child("layers", std::make_unique<ResidualBlocks>());
    MixerOptions o("wavemix", c.mixers[0].options);
    levels_ = static_cast<int>(o.get_int("level", 2));
    const int64_t mult = o.get_int("mult", 2), ff = o.get_int("ff_channel", c.dims[0]);
    o.finish();
    for (int b = 0; b < c.depths[0]; ++b)
      layers_->append(std::make_unique<WaveMixBlock>(c.dims[0], levels_, mult, ff));
    pool_ = add_child("pool", std::make_unique<PoolHead>(c.dims[0], c.num_classes));
  }
  std::string kind() const override { return "WaveMix"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    // The stem's reduction and the blocks' 2^level halvings need whole cells (the authors' code fails
    // on anything else, with a shape mismatch at a concatenation).
    const auto& st = config_.stem;
    const int64_t cell = (st.type == "patch" ? st.kernel_size : st.stride * st.stride) * (int64_t{1} << levels_);
    MF_CHECK(x.dim(1) % cell == 0 && x.dim(2) % cell == 0,
             "model {}: a {}x{} input does not divide into {}x{} cells (the stem's reduction times 2^{} for the "
             "{}-level DWT)", config_.name, x.dim(1), x.dim(2), cell, cell, levels_, levels_);
    return pool_->run(ctx, layers_->run(ctx, stem_->run(ctx, x)));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    return stem_->backward(ctx, layers_->backward(ctx, pool_->backward(ctx, dy)));
  }

 private:
  MetaFormerConfig config_;
  int levels_;
  WaveMixStem* stem_;
  ResidualBlocks* layers_;
  PoolHead* pool_;
};

}  // namespace

std::unique_ptr<Module> make_wavemix_net(const MetaFormerConfig& c) { return std::make_unique<WaveMixNet>(c); }

}  // namespace mf
