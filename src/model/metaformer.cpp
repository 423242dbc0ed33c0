#include "model/metaformer.h"

#include "core/rng.h"
#include "mixers/mixer.h"
#include "model/affnet.h"
#include "model/custom_layouts.h"

namespace mf {

// ---------------------------------------------------------------------------------------------- stem
Stem::Stem(int in_chans, int out_chans, const ConvSpec& spec) : spec_(spec) {
  const auto conv = [&](int in, int out) {
    return std::make_unique<Conv2d>(in, out, spec.kernel_size, spec.stride, spec.padding, /*bias=*/true);
  };
  if (spec.type == "two_conv") {
    conv_ = add_child("conv1", conv(in_chans, out_chans / 2));
    if (spec.mid_norm && spec.norm) norm_ = add_child("norm1", std::make_unique<Norm>(*spec.norm, out_chans / 2));
    act_ = add_child("act", make_activation(spec.act));
    conv2_ = add_child("conv2", conv(out_chans / 2, out_chans));
    if (spec.norm) norm2_ = add_child("norm2", std::make_unique<Norm>(*spec.norm, out_chans));
  } else {
    conv_ = add_child(spec.type == "patch" ? "proj" : "conv", conv(in_chans, out_chans));
    if (spec.norm) norm_ = add_child("norm", std::make_unique<Norm>(*spec.norm, out_chans));
  }
  conv_->set_needs_input_grad(false);  // the stem's input is the data
}

int64_t Stem::out_size(int64_t in) const {
  const ConvGeometry g{spec_.kernel_size, spec_.kernel_size, spec_.stride, spec_.stride, spec_.padding, spec_.padding};
  return conv2_ ? g.out_h(g.out_h(in)) : g.out_h(in);
}

Tensor Stem::forward(Ctx& ctx, const Tensor& x) {
  Tensor y = conv_then_norm(ctx, *conv_, norm_, x);  // a BatchNorm folds into the conv at inference
  if (!conv2_) return y;
  act_->apply_(ctx, y);
  return conv_then_norm(ctx, *conv2_, norm2_, y);
}

Tensor Stem::backward(Ctx& ctx, const Tensor& dy) {
  Tensor d = dy;
  if (conv2_) {
    if (norm2_) d = norm2_->backward(ctx, d);
    d = act_->backward(ctx, conv2_->backward(ctx, d));
  }
  if (norm_) d = norm_->backward(ctx, d);
  return conv_->backward(ctx, d);
}

// -------------------------------------------------------------------------------------- downsampling
Downsampling::Downsampling(int in_chans, int out_chans, const ConvSpec& spec, const ConvGeometry& geometry)
    : norm_after_(spec.norm_after) {
  if (spec.norm && !norm_after_) norm_ = add_child("norm", std::make_unique<Norm>(*spec.norm, in_chans));
  conv_ = add_child("conv", std::make_unique<Conv2d>(in_chans, out_chans, geometry, /*bias=*/true));
  if (spec.norm && norm_after_) norm_ = add_child("norm", std::make_unique<Norm>(*spec.norm, out_chans));
}

Tensor Downsampling::forward(Ctx& ctx, const Tensor& x) {
  if (norm_after_) return conv_then_norm(ctx, *conv_, norm_, x);  // a BatchNorm folds in at inference
  return conv_->run(ctx, norm_ ? norm_->run(ctx, x) : x);
}

Tensor Downsampling::backward(Ctx& ctx, const Tensor& dy) {
  if (norm_after_) return conv_->backward(ctx, norm_ ? norm_->backward(ctx, dy) : dy);
  Tensor d = conv_->backward(ctx, dy);
  return norm_ ? norm_->backward(ctx, d) : d;
}

// ------------------------------------------------------------------------------------------- block
MetaFormerBlock::MetaFormerBlock(const MetaFormerConfig& c, int stage, int64_t height, int64_t width,
                                 double drop_path)
    : drop_path_(drop_path) {
  const int64_t dim = c.dims[static_cast<size_t>(stage)];
  const auto s = static_cast<size_t>(stage);
  // Child names per block style (config.h); registration order = timm's state-dict order.
  struct Names {
    const char *norm1, *mixer, *ls1, *norm2, *mlp, *ls2, *ls_param;
  };
  const Names n = c.block == "mambaout"    ? Names{"norm", "", "ls", "", "", "", "gamma"}
                  : c.block == "mlp_mixer" ? Names{"norm1", "mlp_tokens", "ls1", "norm2", "mlp_channels", "ls2", ""}
                  : c.block == "resmlp"    ? Names{"norm1", "linear_tokens", "ls1", "norm2", "mlp_channels", "ls2", ""}
                  : c.block == "gmlp"      ? Names{"norm", "mlp_channels", "ls", "", "", "", "gamma"}
                  : c.block == "mamba"     ? Names{"norm", "mixer", "ls", "", "", "", "gamma"}
                                           : Names{"norm1", "token_mixer", "layer_scale1", "norm2", "mlp",
                                                   "layer_scale2", "scale"};
  const auto ls = c.layer_scale_init[s], rs = c.res_scale_init[s];
  norm1_ = add_child(n.norm1, std::make_unique<Norm>(c.norms[s], dim));
  MixerContext mc{dim, stage, height, width, c.mixers[s].options};
  mixer_ = add_child(n.mixer, MixerRegistry::get().create(c.mixers[s].type, mc));
  if (ls) layer_scale1_ = add_child(n.ls1, std::make_unique<Scale>(dim, static_cast<float>(*ls), n.ls_param));
  if (rs) res_scale1_ = add_child("res_scale1", std::make_unique<Scale>(dim, static_cast<float>(*rs)));
  if (!c.has_mlp_branch()) return;
  norm2_ = add_child(n.norm2, std::make_unique<Norm>(c.norms[s], dim));
  // timm: int(mlp_ratio * dim); MetaFormer's token-stage (attention) MLPs are nn.Linear, its other
  // stages' 1×1 convs (weights [out, in, 1, 1]); mlp_mixer.py's are nn.Linear.
  const bool conv1x1 = c.block == "metaformer" && c.mixers[s].type != "attention";
  if (!c.mlp_mixer.type.empty()) {  // a channel mixer in the MLP's place, under the MLP's name
    MixerContext cc{dim, stage, height, width, c.mlp_mixer.options};
    channel_mixer_ = add_child(n.mlp, MixerRegistry::get().create(c.mlp_mixer.type, cc));
  } else {
    mlp_ = add_child(n.mlp, std::make_unique<Mlp>(dim, static_cast<int64_t>(c.mlp_ratio * static_cast<double>(dim)),
                                                  c.mlp_act, c.mlp_bias, conv1x1, c.mlp_glu, c.mlp_gate));
  }
  if (ls) layer_scale2_ = add_child(n.ls2, std::make_unique<Scale>(dim, static_cast<float>(*ls), n.ls_param));
  if (rs) res_scale2_ = add_child("res_scale2", std::make_unique<Scale>(dim, static_cast<float>(*rs)));
}

namespace {
const Tensor* scale_of(const Scale* s) { return s ? &s->value() : nullptr; }
// Whether the scale is a trainable parameter (its gradient then needs the branch output).
bool scale_trains(Scale* s) { return s && s->param()->trainable; }
// The scale's gradient, where it has one this step (a trainable parameter with its gradient made).
Tensor* scale_grad(Scale* s) {
  if (!s) return nullptr;
  Parameter* p = s->param();
  return p->trainable && p->grad.defined() ? &p->grad : nullptr;
}
// The gradients of y = x ⊙ rs + m ⊙ ls, m = branch(norm(x)), given dy: the branch's dy, and what the
// norm's backward adds to its dx (Norm::backward_add: the skip gradient and the res scale it is to be
// multiplied by). Without a layer scale the branch's dy is dy itself and the res scale's product and
// gradient are left to the norm's backward: no pass over the stream for copies of dy (the branch's
// backward only reads its dy) nor for the res scale. With one, scaled_residual_backward makes both
// (then dx's skip term needs no scale).
struct ResidualGrads {
  Tensor branch, skip;
  const Tensor* res_scale = nullptr;
  Tensor* d_res_scale = nullptr;
};
ResidualGrads residual_grads(Ctx& ctx, const Tensor& x, Scale* rs, const Tensor& m, Scale* ls, const Tensor& dy) {
  if (!ls) return {dy, dy, scale_of(rs), scale_grad(rs)};
  // A layer scale alone (PoolFormer): the skip gradient is dy itself, so only the branch's is written.
  auto [skip, branch] = op::scaled_residual_backward(ctx.exec, x, scale_of(rs), m, scale_of(ls), dy, scale_grad(rs),
                                                     scale_grad(ls), /*need_dx=*/rs != nullptr);
  return {branch, rs ? skip : dy};
}
}  // namespace

Tensor MetaFormerBlock::drop_path_mask(Ctx& ctx, int64_t batch) const {
  MF_CHECK(ctx.rng != nullptr, "{}: drop path needs a random generator in training", path());
  Tensor mask = Tensor::empty({batch});
  const float keep = static_cast<float>(1.0 - drop_path_);
  for (int64_t b = 0; b < batch; ++b) mask.data()[b] = ctx.rng->uniform() < keep ? 1.f / keep : 0.f;
  return mask;
}

Tensor MetaFormerBlock::forward_owned(Ctx& ctx, Tensor x) {
  if (ctx.training) return forward(ctx, x);
  // Each half as one call that may fuse its norm and residual (TokenMixer / Mlp::run_branch).
  Tensor h = mixer_->run_branch(ctx, x, *norm1_, {scale_of(res_scale1_), scale_of(layer_scale1_)});
  x = Tensor();  // read by the first half only: its memory serves the second (a GPU frees it in stream order)
  if (channel_mixer_)
    return channel_mixer_->run_branch(ctx, h, *norm2_, {scale_of(res_scale2_), scale_of(layer_scale2_)});
  if (!mlp_) return h;
  // h is the block's own: the second half may write over it (where no one else holds it).
  return mlp_->run_branch_owned(ctx, std::move(h), *norm2_, {scale_of(res_scale2_), scale_of(layer_scale2_)});
}

Tensor MetaFormerBlock::forward(Ctx& ctx, const Tensor& x) {
  if (!ctx.training) return forward_owned(ctx, x);  // a copy: the caller's x stays alive, as it holds it
  // Training: keep the inputs of both residual adds; with drop path, mask each branch per sample. A
  // branch's output is kept only where a layer scale's gradient reads it (the residual's input is
  // kept anyway by the norm that reads it): ConvFormer and CAFormer have no layer scale, and their
  // branch outputs held the size of two residual streams a block until the backward pass.
  const bool drop = drop_path_ > 0;
  // The mixer half as one op where the backend folds layer scales and the mixer has one (PoolFormer's
  // pooling: neither the norm's nor the mixer's output is written).
  Tensor h;
  if (layer_scale1_ && !res_scale1_ && !drop)
    h = mixer_->run_scaled_branch_train(ctx, x, *norm1_, *scale_of(layer_scale1_));
  mixer_folded_ = h.defined();
  // A half without scales or drop path where the backend fuses residuals into Linears: the branch's
  // last Linear adds the skip (op::linear_residual), so the branch output is never written. The
  // backward is the same either way (the branch's dy is the block's). Not with ctx.on_output, which
  // reports the mixer's and MLP's own outputs.
  const bool res_linear = !drop && !ctx.on_output && ctx.exec.backend->fuses_residual_into_linear();
  if (!mixer_folded_) {
    Tensor n = norm1_->run(ctx, x);
    if (res_linear && !res_scale1_ && !layer_scale1_) h = mixer_->run_residual_train(ctx, n, x);
    if (!h.defined()) {
      Tensor m = mixer_->run(ctx, n);
      if (drop) m = op::sample_scale(ctx.exec, m, mask1_ = drop_path_mask(ctx, x.dim(0)));
      h = op::scaled_residual_new(ctx.exec, x, scale_of(res_scale1_), m, scale_of(layer_scale1_));
      if (scale_trains(layer_scale1_)) saved_mixer_out_ = m;
    }
  }
  saved_x_ = x;
  if (!second_branch()) return h;
  // PoolFormer's MLP half where the backend folds the layer scale into fc2: fc2's GEMM adds the
  // residual and neither the MLP's output nor dy ⊙ ls is ever written (docs/cuda.md).
  mlp_folded_ = folds_mlp_layer_scale(ctx);
  if (mlp_folded_) {
    saved_h_ = h;
    return mlp_->run_scaled_residual_train(ctx, norm2_->run(ctx, h), h, *scale_of(layer_scale2_));
  }
  Tensor n2 = norm2_->run(ctx, h);
  saved_h_ = h;
  if (res_linear && mlp_ && !res_scale2_ && !layer_scale2_)
    if (Tensor y = mlp_->run_residual_train(ctx, n2, h); y.defined()) return y;
  Tensor p = second_branch()->run(ctx, n2);
  if (drop) p = op::sample_scale(ctx.exec, p, mask2_ = drop_path_mask(ctx, x.dim(0)));
  Tensor y = op::scaled_residual_new(ctx.exec, h, scale_of(res_scale2_), p, scale_of(layer_scale2_));
  if (scale_trains(layer_scale2_)) saved_mlp_out_ = p;
  return y;
}

Tensor MetaFormerBlock::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  Tensor dh = dy;
  if (second_branch()) dh = mlp_branch_backward(ctx, dy);
  Tensor dx;
  if (mixer_folded_) {
    mixer_folded_ = false;
    dx = mixer_->backward_scaled_branch(ctx, saved_x_, *norm1_, *scale_of(layer_scale1_), dh,
                                        scale_grad(layer_scale1_));
  } else {
    // h = x ⊙ rs1 + m ⊙ ls1, m = mixer(norm1(x))
    ResidualGrads g = residual_grads(ctx, saved_x_, res_scale1_, saved_mixer_out_, layer_scale1_, dh);
    if (mask1_.defined()) g.branch = op::sample_scale(ctx.exec, g.branch, mask1_);
    dx = norm1_->backward_add(ctx, mixer_->backward(ctx, g.branch), g.skip, g.res_scale, g.d_res_scale);
  }
  saved_x_ = saved_mixer_out_ = saved_h_ = saved_mlp_out_ = mask1_ = mask2_ = Tensor();
  return dx;
}

bool MetaFormerBlock::folds_mlp_layer_scale(const Ctx& ctx) const {
  return ctx.training && mlp_ && mlp_->can_fold_layer_scale() && layer_scale2_ && !res_scale2_ && drop_path_ <= 0 &&
         ctx.exec.backend->folds_layer_scales();
}

Tensor MetaFormerBlock::mlp_branch_backward(Ctx& ctx, const Tensor& dy) {
  if (mlp_folded_) {
    // y = h + ls2 ⊙ mlp(norm2(h)): the skip gradient is dy itself, the norm's backward adds it.
    mlp_folded_ = false;
    Tensor dn = mlp_->backward_scaled(ctx, dy, *scale_of(layer_scale2_), scale_grad(layer_scale2_));
    return norm2_->backward_add(ctx, dn, dy, nullptr, nullptr);
  }
  // y = h ⊙ rs2 + p ⊙ ls2, p = mlp(norm2(h))
  ResidualGrads g = residual_grads(ctx, saved_h_, res_scale2_, saved_mlp_out_, layer_scale2_, dy);
  if (mask2_.defined()) g.branch = op::sample_scale(ctx.exec, g.branch, mask2_);
  return norm2_->backward_add(ctx, second_branch()->backward(ctx, g.branch), g.skip, g.res_scale, g.d_res_scale);
}

// ------------------------------------------------------------------------------------------- stage
MetaFormerStage::MetaFormerStage(const MetaFormerConfig& c, int stage, int in_chans, int64_t height, int64_t width,
                                 const std::vector<double>& drop_path) {
  const int out = c.dims[static_cast<size_t>(stage)];
  // As timm: a stage downsamples exactly when its width changes (stage 0's reduction is the stem's).
  if (stage > 0 && in_chans != out)
    downsample_ = add_child("downsample", std::make_unique<Downsampling>(in_chans, out, c.downsample, c.downsample_geometry()));
  blocks_ = add_child("blocks", std::make_unique<Sequential>());
  for (int b = 0; b < c.depths[static_cast<size_t>(stage)]; ++b)
    blocks_->append(std::make_unique<MetaFormerBlock>(c, stage, height, width, drop_path[static_cast<size_t>(b)]));
}

Tensor MetaFormerStage::forward(Ctx& ctx, const Tensor& x) {
  return blocks_->run(ctx, downsample_ ? downsample_->run(ctx, x) : x);
}

Tensor MetaFormerStage::forward_owned(Ctx& ctx, Tensor x) {
  if (downsample_) x = downsample_->run(ctx, x);
  return blocks_->run_owned(ctx, std::move(x));
}

Tensor MetaFormerStage::backward(Ctx& ctx, const Tensor& dy) {
  Tensor d = blocks_->backward(ctx, dy);
  return downsample_ ? downsample_->backward(ctx, d) : d;
}

// -------------------------------------------------------------------------------------------- head
MlpHead::MlpHead(int64_t dim, int num_classes, const HeadSpec& spec) {
  const auto hidden = static_cast<int64_t>(spec.mlp_ratio * static_cast<double>(dim));
  fc1_ = add_child("fc1", std::make_unique<Linear>(dim, hidden, true));
  act_ = add_child("act", make_activation(spec.act));
  norm_ = add_child("norm", std::make_unique<Norm>(spec.mlp_norm, hidden));
  fc2_ = add_child("fc2", std::make_unique<Linear>(hidden, num_classes, true));
}

Tensor MlpHead::forward(Ctx& ctx, const Tensor& x) {
  Tensor h = fc1_->run(ctx, x);
  act_->apply_(ctx, h);
  return fc2_->run(ctx, norm_->run(ctx, h));
}

Tensor MlpHead::backward(Ctx& ctx, const Tensor& dy) {
  return fc1_->backward(ctx, act_->backward(ctx, norm_->backward(ctx, fc2_->backward(ctx, dy))));
}

PreLogits::PreLogits(int64_t dim, int64_t hidden, const std::string& act, const std::optional<NormSpec>& norm) {
  fc_ = add_child("fc", std::make_unique<Linear>(dim, hidden, true));
  act_ = add_child("act", make_activation(act));
  if (norm) norm_ = add_child("norm", std::make_unique<Norm>(*norm, hidden));
}

Tensor PreLogits::forward(Ctx& ctx, const Tensor& x) {
  Tensor h = fc_->run(ctx, x);
  act_->apply_(ctx, h);
  return norm_ ? norm_->run(ctx, h) : h;
}

Tensor PreLogits::backward(Ctx& ctx, const Tensor& dy) {
  return fc_->backward(ctx, act_->backward(ctx, norm_ ? norm_->backward(ctx, dy) : dy));
}

MetaFormerHead::MetaFormerHead(int64_t dim, int num_classes, const HeadSpec& spec) {
  norm_ = add_child("norm", std::make_unique<Norm>(spec.norm, dim));
  if (spec.type == "mlp") {
    fc_ = add_child("fc", std::make_unique<MlpHead>(dim, num_classes, spec));
  } else if (spec.type == "mambaout_mlp" || spec.type == "norm_mlp") {
    const auto hidden = static_cast<int64_t>(spec.mlp_ratio * static_cast<double>(dim));
    std::optional<NormSpec> norm;
    if (spec.type == "mambaout_mlp") norm = spec.mlp_norm;
    pre_logits_ = add_child("pre_logits", std::make_unique<PreLogits>(dim, hidden, spec.act, norm));
    fc_ = add_child("fc", std::make_unique<Linear>(hidden, num_classes, true));
  } else {
    fc_ = add_child("fc", std::make_unique<Linear>(dim, num_classes, true));
  }
}

Tensor MetaFormerHead::forward(Ctx& ctx, const Tensor& x) {
  if (ctx.training) saved_shape_ = x.shape();
  Tensor h = norm_->run(ctx, op::global_avg_pool(ctx.exec, x));
  if (pre_logits_) h = pre_logits_->run(ctx, h);
  return fc_->run(ctx, h);
}

Tensor MetaFormerHead::backward(Ctx& ctx, const Tensor& dy) {
  Tensor d = fc_->backward(ctx, dy);
  if (pre_logits_) d = pre_logits_->backward(ctx, d);
  return op::global_avg_pool_backward(ctx.exec, norm_->backward(ctx, d), saved_shape_);
}

// ------------------------------------------------------------------------------------------- model
MetaFormer::MetaFormer(const MetaFormerConfig& config) : config_(config) {
  config_.validate();
  const auto& c = config_;
  if (c.is_affnet()) {  // the authors' AFFNet (model/affnet.h): its own top-level modules
    for (auto& [name, layer] : make_affnet_layers(c)) affnet_layers_.push_back(add_child(name, std::move(layer)));
    assign_paths();
    return;
  }
  if (c.custom_layout()) {
    // Registered under an empty name: its children are the model's top-level keys.
    body_ = add_child("", c.layout == "raftmlp"    ? make_raftmlp_net(c)
                          : c.layout == "msmlp"    ? make_msmlp_net(c)
                          : c.layout == "stripmlp" ? make_stripmlp_net(c)
                          : c.layout == "casvit"   ? make_casvit_net(c)
                          : c.layout == "wavemix"  ? make_wavemix_net(c)
                                                   : make_iformer_net(c));
    assign_paths();
    return;
  }
  // Token grid of each stage at the nominal input size (needed by mixers tied to a size); a sequence
  // model's is 1 × (tokens at the nominal length).
  int64_t h = 0, w = 0;
  if (c.is_sequence()) {
    seq_stem_ = add_child("stem", std::make_unique<SequenceStem>(c));
    h = 1, w = c.sequence.tokens(c.sequence.length);
  } else {
    stem_ = add_child("stem", std::make_unique<Stem>(c.in_chans, c.dims[0], c.stem));
    h = w = stem_->out_size(c.input.size);
  }
  // Stochastic depth grows linearly from 0 at the first block to drop_path_rate at the last.
  int total = 0;
  for (int d : c.depths) total += d;
  auto rate = [&](int block) { return total > 1 ? c.drop_path_rate * block / (total - 1) : 0.0; };
  if (c.isotropic()) {
    // mlp_mixer.py: stem, blocks, norm over every token, mean over tokens, linear head.
    blocks_ = add_child("blocks", std::make_unique<Sequential>());
    for (int b = 0; b < c.depths[0]; ++b) blocks_->append(std::make_unique<MetaFormerBlock>(c, 0, h, w, rate(b)));
    if (c.head.series_head()) {  // PatchTSMixer's heads: no final norm (docs/sequences.md)
      const int64_t rows = seq_stem_->rows_per_sample();
      const bool forecast = c.head.type == "forecast";
      const int64_t in = forecast ? w * c.dims[0] : rows * c.dims[0];
      const int64_t out = forecast ? int64_t{c.head.horizon} * (c.in_chans / rows) : c.num_classes;
      linear_head_ = add_child("head", std::make_unique<Linear>(in, out, true));
      assign_paths();
      return;
    }
    norm_ = add_child("norm", std::make_unique<Norm>(c.head.norm, c.dims[0]));
    linear_head_ = add_child("head", std::make_unique<Linear>(c.dims[0], c.num_classes, true));
    assign_paths();
    return;
  }
  stages_ = add_child("stages", std::make_unique<Sequential>());
  int prev = c.dims[0];
  int block = 0;
  const ConvGeometry down = c.downsample_geometry();
  for (size_t s = 0; s < c.num_stages(); ++s) {
    if (s > 0 && prev != c.dims[s]) h = down.out_h(h), w = down.out_w(w);
    std::vector<double> rates;
    for (int b = 0; b < c.depths[s]; ++b, ++block) rates.push_back(rate(block));
    stages_->append(std::make_unique<MetaFormerStage>(c, static_cast<int>(s), prev, h, w, rates));
    prev = c.dims[s];
  }
  head_ = add_child("head", std::make_unique<MetaFormerHead>(c.dims.back(), c.num_classes, c.head));
  assign_paths();
}

void MetaFormer::check_input(const Shape& s) const {
  if (seq_stem_) {
    seq_stem_->check_input(s);
    return;
  }
  MF_CHECK(s.ndim() == 4, "model input must be a batch of images [B, {}, H, W]; got shape {}", config_.in_chans,
           s.str());
  MF_CHECK(s[3] == config_.in_chans, "model {} takes {} input channels; got {}", config_.name, config_.in_chans, s[3]);
  MF_CHECK(s[0] >= 1, "empty batch");
  // Every stride must leave at least one pixel.
  int64_t h = s[1], w = s[2];
  if (body_) return;  // the custom layouts check their own sizes
  const auto& st = config_.stem;
  MF_CHECK(h + 2 * st.padding >= st.kernel_size && w + 2 * st.padding >= st.kernel_size,
           "input {}x{} is smaller than the stem's {}x{} kernel", h, w, st.kernel_size, st.kernel_size);
}

void MetaFormer::check_backend(const Backend& backend) const {
  std::set<OpKind> ops;
  all_ops(ops);
  for (OpKind op : ops)
    MF_CHECK(backend.supports(op), "model {} needs op {}, which backend {} does not support", config_.name,
             op_name(op), backend.name());
}

Tensor MetaFormer::forward(Ctx& ctx, const Tensor& x) {
  check_input(x.shape());
  if (!affnet_layers_.empty()) {
    Tensor y = x;
    for (Module* layer : affnet_layers_) y = layer->run(ctx, y);
    return y;
  }
  if (body_) return body_->forward(ctx, x);
  Tensor y = seq_stem_ ? seq_stem_->run(ctx, x) : stem_->run(ctx, x);
  if (blocks_ && !norm_) return series_head_forward(ctx, blocks_->run_owned(ctx, std::move(y)));
  if (blocks_) {
    y = norm_->run(ctx, blocks_->run_owned(ctx, std::move(y)));
    if (ctx.training) saved_tokens_shape_ = y.shape();
    return linear_head_->run(ctx, op::global_avg_pool(ctx.exec, y));
  }
  // The stem's output handed over: the first stage drops it after its first block's first half
  // (held here, it stayed through stage 0, one activation stream of the largest stage).
  y = stages_->run_owned(ctx, std::move(y));
  return head_->run(ctx, y);
}

Tensor MetaFormer::backward(Ctx& ctx, const Tensor& dlogits) {
  if (!affnet_layers_.empty()) {
    Tensor d = dlogits;
    for (auto it = affnet_layers_.rbegin(); it != affnet_layers_.rend(); ++it) d = (*it)->backward(ctx, d);
    return d;
  }
  if (body_) return body_->backward(ctx, dlogits);
  if (blocks_ && !norm_) return seq_stem_->backward(ctx, blocks_->backward(ctx, series_head_backward(ctx, dlogits)));
  if (blocks_) {
    Tensor d = op::global_avg_pool_backward(ctx.exec, linear_head_->backward(ctx, dlogits), saved_tokens_shape_);
    d = blocks_->backward(ctx, norm_->backward(ctx, d));
    return seq_stem_ ? seq_stem_->backward(ctx, d) : stem_->backward(ctx, d);
  }
  Tensor d = head_->backward(ctx, dlogits);
  if (ctx.on_backward_done) ctx.on_backward_done(*head_);
  d = stages_->backward(ctx, d);
  return seq_stem_ ? seq_stem_->backward(ctx, d) : stem_->backward(ctx, d);
}

// tokens [B·rows, 1, N, dim] (rows: the sequences of a sample, in_chans with independent channels).
//   forecast: each sequence's N·dim values -> horizon · (in_chans / rows) steps -> [B, horizon, in_chans]
//             (independent channels: the [B, C, horizon] result transposed), then, with std scaling,
//             each channel mapped back: y · scale + loc.
//   channel_mean_linear: mean over each sequence's tokens, the rows' means side by side -> classes.
Tensor MetaFormer::series_head_forward(Ctx& ctx, const Tensor& tokens) {
  const int64_t rows = seq_stem_->rows_per_sample(), B = tokens.dim(0) / rows, C = config_.in_chans;
  if (ctx.training) saved_tokens_shape_ = tokens.shape();
  if (config_.head.type == "channel_mean_linear")
    return linear_head_->run(ctx, op::global_avg_pool(ctx.exec, tokens).reshape({B, rows * tokens.dim(3)}));
  const int64_t n = tokens.dim(2), H = config_.head.horizon;
  MF_CHECK(n * tokens.dim(3) == linear_head_->in_features(), "the forecast head was built for {} tokens (sequence.length "
           "{}); this series gives {}", linear_head_->in_features() / tokens.dim(3), config_.sequence.length, n);
  Tensor y = linear_head_->run(ctx, tokens.reshape({tokens.dim(0), n * tokens.dim(3)}));
  y = rows > 1 ? op::permute(ctx.exec, y.reshape({B, C, H}), {0, 2, 1}) : y.reshape({B, H, C});
  if (config_.sequence.scaling == "std") {
    MF_CHECK(y.device() == Device::CPU, "std scaling maps a forecast back on the host: use the ref or cpu backend");
    const auto &loc = seq_stem_->loc(), &scale = seq_stem_->scale();
    Tensor z = Tensor::empty(y.shape());
    for (int64_t i = 0; i < y.numel(); ++i) {
      const auto bc = static_cast<size_t>((i / (H * C)) * C + i % C);
      z.data()[i] = y.data()[i] * scale[bc] + loc[bc];
    }
    y = z;
  }
  return y;
}

Tensor MetaFormer::series_head_backward(Ctx& ctx, const Tensor& dy) {
  const int64_t rows = seq_stem_->rows_per_sample(), BR = saved_tokens_shape_[0], D = saved_tokens_shape_[3];
  if (config_.head.type == "channel_mean_linear") {
    const Tensor d = linear_head_->backward(ctx, dy).reshape({BR, D});
    return op::global_avg_pool_backward(ctx.exec, d, saved_tokens_shape_);
  }
  const int64_t B = BR / rows, C = config_.in_chans, H = config_.head.horizon;
  Tensor d = dy;
  if (config_.sequence.scaling == "std") {  // y = u · scale + loc: du = dy · scale
    const auto& scale = seq_stem_->scale();
    d = Tensor::empty(dy.shape());
    for (int64_t i = 0; i < dy.numel(); ++i)
      d.data()[i] = dy.data()[i] * scale[static_cast<size_t>((i / (H * C)) * C + i % C)];
  }
  d = rows > 1 ? op::permute(ctx.exec, d.reshape({B, H, C}), {0, 2, 1}) : d;
  return linear_head_->backward(ctx, d.reshape({BR, (C / rows) * H})).reshape(saved_tokens_shape_);
}

Tensor MetaFormer::forward_nchw(Ctx& ctx, const Tensor& x) {
  if (seq_stem_) {  // [B, C, 1, L]: the sequence's channels first, as an NCHW image of height 1
    MF_CHECK(x.ndim() == 4 && x.dim(2) == 1, "a sequence model's input is [B, {}, 1, L] (NCHW); got shape {}",
             config_.in_chans, x.shape().str());
  }
  MF_CHECK(x.ndim() == 4, "model input must be [B, C, H, W]; got shape {}", x.shape().str());
  MF_CHECK(x.dim(1) == config_.in_chans, "model {} takes {} input channels; got shape {} (NCHW expected)",
           config_.name, config_.in_chans, x.shape().str());
  return run(ctx, op::nchw_to_nhwc(ctx.exec, x));
}

}  // namespace mf
