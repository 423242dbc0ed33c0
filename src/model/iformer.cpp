// iFormer (Si et al., "Inception Transformer", sail-sg/iFormer), as the authors' InceptionTransformer
// class builds it:
//   pos_embed{s}                 [1, n_s, n_s, C_s] learned positions, added after each embedding
//   patch_embed                  proj1 3×3/2 (3 -> C/2), norm1 BatchNorm, GELU, proj2 3×3/2, norm2 BatchNorm
//   patch_embed{2,3,4}           proj 3×3/2, norm BatchNorm
//   blocks{s}.{b}                x + [layer_scale_1 ⊙] attn(norm1(x)); x + [layer_scale_2 ⊙] mlp(norm2(x)),
//                                attn the Inception mixer (mixers/inception.h), layer scale in stages 3-4
//   norm, head                   LayerNorm on every token, mean over tokens, Linear
// The BatchNorms are folded into their convolutions at inference.
#include <fmt/format.h>

#include "mixers/inception.h"
#include "model/custom_layouts.h"
#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/mlp.h"
#include "nn/norm.h"
#include "nn/scale.h"
#include "nn/sequential.h"

namespace mf {

namespace {

// The authors' FirstPatchEmbed (two_conv: proj1, norm1, gelu1, proj2, norm2) or PatchEmbed (proj, norm).
class IFormerEmbed : public Module {
 public:
  IFormerEmbed(int64_t in, int64_t out, const NormSpec& norm, bool first) {
    if (first) {
      proj1_ = add_child("proj1", std::make_unique<Conv2d>(in, out / 2, 3, 2, 1, true));
      proj1_->set_needs_input_grad(false);  // the image
      norm1_ = add_child("norm1", std::make_unique<Norm>(norm, out / 2));
      act_ = add_child("gelu1", make_activation("gelu"));
      proj_ = add_child("proj2", std::make_unique<Conv2d>(out / 2, out, 3, 2, 1, true));
      norm_ = add_child("norm2", std::make_unique<Norm>(norm, out));
    } else {
      proj_ = add_child("proj", std::make_unique<Conv2d>(in, out, 3, 2, 1, true));
      norm_ = add_child("norm", std::make_unique<Norm>(norm, out));
    }
  }
  std::string kind() const override { return proj1_ ? "FirstPatchEmbed" : "PatchEmbed"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor y = x;
    if (proj1_) {
      y = conv_then_norm(ctx, *proj1_, norm1_, y);
      act_->apply_(ctx, y);
    }
    return conv_then_norm(ctx, *proj_, norm_, y);
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = proj_->backward(ctx, norm_->backward(ctx, dy));
    if (proj1_) d = proj1_->backward(ctx, norm1_->backward(ctx, act_->backward(ctx, d)));
    return d;
  }

 private:
  Conv2d* proj1_ = nullptr;
  Norm* norm1_ = nullptr;
  ActivationLayer* act_ = nullptr;
  Conv2d* proj_;
  Norm* norm_;
};

class IFormerBlock : public Module {
 public:
  IFormerBlock(const MetaFormerConfig& c, size_t s, int heads, int attention_heads, int pool) {
    const int64_t dim = c.dims[s];
    norm1_ = add_child("norm1", std::make_unique<Norm>(c.norms[s], dim));
    attn_ = add_child("attn", std::make_unique<InceptionMixer>(dim, heads, attention_heads, pool));
    norm2_ = add_child("norm2", std::make_unique<Norm>(c.norms[s], dim));
    mlp_ = add_child("mlp", std::make_unique<Mlp>(dim, static_cast<int64_t>(c.mlp_ratio * static_cast<double>(dim)),
                                                  c.mlp_act, true, false));
    if (c.layer_scale_init[s]) {  // parameters of the block itself, as the authors'
      const auto init = static_cast<float>(*c.layer_scale_init[s]);
      ls1_ = add_child("", std::make_unique<Scale>(dim, init, "layer_scale_1"));
      ls2_ = add_child("", std::make_unique<Scale>(dim, init, "layer_scale_2"));
    }
  }
  std::string kind() const override { return "Block"; }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::ScaledResidual); }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    Tensor a = attn_->run(ctx, norm1_->run(ctx, x));
    Tensor y = residual(ctx, x, a, ls1_, saved_a_);
    Tensor m = mlp_->run(ctx, norm2_->run(ctx, y));
    return residual(ctx, y, m, ls2_, saved_m_);
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    auto [dy1, dm] = residual_backward(ctx, dy, ls2_, saved_m_);
    Tensor d = norm2_->backward(ctx, mlp_->backward(ctx, dm));
    dy1 = op::scaled_residual(ctx.exec, dy1, nullptr, d, nullptr);
    auto [dx, da] = residual_backward(ctx, dy1, ls1_, saved_a_);
    d = norm1_->backward(ctx, attn_->backward(ctx, da));
    return op::scaled_residual(ctx.exec, dx, nullptr, d, nullptr);
  }

 private:
  // x + [ls ⊙] branch
  static Tensor residual(Ctx& ctx, const Tensor& x, const Tensor& branch, Scale* ls, Tensor& saved) {
    const Tensor* scale = ls ? &ls->value() : nullptr;
    if (!ctx.training) return op::scaled_residual(ctx.exec, x, nullptr, branch, scale);
    saved = branch;
    return op::scaled_residual_new(ctx.exec, x, nullptr, branch, scale);
  }
  // -> (d x, d branch), accumulating d ls
  static std::pair<Tensor, Tensor> residual_backward(Ctx& ctx, const Tensor& dy, Scale* ls, Tensor& saved) {
    MF_CHECK(saved.defined(), "iFormer block: backward without a training forward");
    Tensor* dls = nullptr;
    if (ls && ls->param()->trainable && ls->param()->grad.defined()) dls = &ls->param()->grad;
    // y = x + ls ⊙ branch: x itself is not needed for these gradients.
    auto grads = op::scaled_residual_backward(ctx.exec, saved, nullptr, saved, ls ? &ls->value() : nullptr, dy, nullptr,
                                              dls);
    saved = Tensor();
    return grads;
  }
  Norm* norm1_;
  InceptionMixer* attn_;
  Norm* norm2_;
  Mlp* mlp_;
  Scale* ls1_ = nullptr;
  Scale* ls2_ = nullptr;
  Tensor saved_a_, saved_m_;
};

class IFormerNet : public Module {
 public:
  explicit IFormerNet(const MetaFormerConfig& c) : config_(c) {
    // The positional embeddings are the top-level module's own parameters: first in its state dict.
    int64_t side = c.input.size / 4;
    for (size_t s = 0; s < c.num_stages(); ++s, side /= 2) {
      sides_.push_back(side);
      pos_.push_back(&add_param(fmt::format("pos_embed{}", s + 1), {1, side, side, c.dims[s]}, Init::trunc_normal(0.02f),
                                false));
    }
    for (size_t s = 0; s < c.num_stages(); ++s) {
      const std::string suffix = s == 0 ? "" : std::to_string(s + 1);
      embeds_.push_back(add_child("patch_embed" + suffix,
                                  std::make_unique<IFormerEmbed>(s == 0 ? c.in_chans : c.dims[s - 1], c.dims[s],
                                                                 s == 0 ? *c.stem.norm : *c.downsample.norm, s == 0)));
      MixerOptions o("inception", c.mixers[s].options);
      const auto heads = static_cast<int>(o.get_int("heads", 1));
      const auto attention = o.get_int_list("attention_heads", {});
      const auto pool = static_cast<int>(o.get_int("pool_size", 1));
      o.finish();
      MF_CHECK(attention.size() == static_cast<size_t>(c.depths[s]), "model '{}': stage {} has {} blocks but {} "
               "attention_heads", c.name, s, c.depths[s], attention.size());
      auto* blocks = add_child("blocks" + std::to_string(s + 1), std::make_unique<Sequential>());
      for (int b = 0; b < c.depths[s]; ++b)
        blocks->append(std::make_unique<IFormerBlock>(c, s, heads, attention[static_cast<size_t>(b)], pool));
      stages_.push_back(blocks);
    }
    norm_ = add_child("norm", std::make_unique<Norm>(c.head.norm, c.dims.back()));
    head_ = add_child("head", std::make_unique<Linear>(c.dims.back(), c.num_classes, true));
  }
  std::string kind() const override { return "InceptionTransformer"; }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::AddPositions);
    ops.insert(OpKind::GlobalAvgPool);
  }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    // The authors interpolate their position tables bilinearly at other sizes, and their low-frequency
    // mixer assumes square grids; here the tables are used as they are, at the size they were made for.
    const int64_t size = config_.input.size;
    MF_CHECK(x.dim(1) == size && x.dim(2) == size, "model {}: iFormer takes {}x{} inputs (its position tables' size); "
             "got {}x{}", config_.name, size, size, x.dim(1), x.dim(2));
    Tensor y = x;
    for (size_t s = 0; s < stages_.size(); ++s) {
      y = embeds_[s]->run(ctx, y);
      const Shape shape = y.shape();
      y = op::add_positions(ctx.exec, y.reshape({shape[0], shape[1] * shape[2], shape[3]}), table(s)).reshape(shape);
      y = stages_[s]->run(ctx, y);
    }
    y = norm_->run(ctx, y);
    if (ctx.training) saved_shape_ = y.shape();
    return head_->run(ctx, op::global_avg_pool(ctx.exec, y));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    Tensor d = norm_->backward(ctx, op::global_avg_pool_backward(ctx.exec, head_->backward(ctx, dy), saved_shape_));
    for (size_t s = stages_.size(); s-- > 0;) {
      d = stages_[s]->backward(ctx, d);
      if (Tensor* g = grad_of(pos_[s])) {
        Tensor table_grad = g->reshape({sides_[s] * sides_[s], g->dim(3)});  // shares g's storage
        op::add_positions_backward_(ctx.exec, d.reshape({d.dim(0), d.dim(1) * d.dim(2), d.dim(3)}), table_grad);
      }
      d = embeds_[s]->backward(ctx, d);
    }
    return d;
  }

 private:
  Tensor table(size_t s) const {
    const Tensor& p = v(pos_[s]);
    return p.reshape({sides_[s] * sides_[s], p.dim(3)});
  }
  MetaFormerConfig config_;
  std::vector<int64_t> sides_;
  std::vector<Parameter*> pos_;
  std::vector<IFormerEmbed*> embeds_;
  std::vector<Sequential*> stages_;
  Norm* norm_;
  Linear* head_;
  Shape saved_shape_;
};

}  // namespace

std::unique_ptr<Module> make_iformer_net(const MetaFormerConfig& c) { return std::make_unique<IFormerNet>(c); }

}  // namespace mf
