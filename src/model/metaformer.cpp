#include "model/metaformer.h"

#include "core/rng.h"
#include "mixers/mixer.h"

namespace mf {

// ---------------------------------------------------------------------------------------------- stem
Stem::Stem(int in_chans, int out_chans, const ConvSpec& spec) {
  conv_ = add_child("conv", std::make_unique<Conv2d>(in_chans, out_chans, spec.kernel_size, spec.stride, spec.padding,
                                                     /*bias=*/true));
  conv_->set_needs_input_grad(false);  // the stem's input is the data
  if (spec.norm) norm_ = add_child("norm", std::make_unique<Norm>(*spec.norm, out_chans));
}

Tensor Stem::forward(Ctx& ctx, const Tensor& x) {
  Tensor y = conv_->run(ctx, x);
  return norm_ ? norm_->run(ctx, y) : y;
}

Tensor Stem::backward(Ctx& ctx, const Tensor& dy) {
  return conv_->backward(ctx, norm_ ? norm_->backward(ctx, dy) : dy);
}

// -------------------------------------------------------------------------------------- downsampling
Downsampling::Downsampling(int in_chans, int out_chans, const ConvSpec& spec) {
  if (spec.norm) norm_ = add_child("norm", std::make_unique<Norm>(*spec.norm, in_chans));
  conv_ = add_child("conv", std::make_unique<Conv2d>(in_chans, out_chans, spec.kernel_size, spec.stride, spec.padding,
                                                     /*bias=*/true));
}

Tensor Downsampling::forward(Ctx& ctx, const Tensor& x) { return conv_->run(ctx, norm_ ? norm_->run(ctx, x) : x); }

Tensor Downsampling::backward(Ctx& ctx, const Tensor& dy) {
  Tensor d = conv_->backward(ctx, dy);
  return norm_ ? norm_->backward(ctx, d) : d;
}

// ------------------------------------------------------------------------------------------- block
MetaFormerBlock::MetaFormerBlock(const MetaFormerConfig& c, int stage, int64_t height, int64_t width,
                                 double drop_path)
    : drop_path_(drop_path) {
  const int64_t dim = c.dims[static_cast<size_t>(stage)];
  const auto s = static_cast<size_t>(stage);
  // Registration order = timm's state-dict order.
  norm1_ = add_child("norm1", std::make_unique<Norm>(c.norms[s], dim));
  MixerContext mc{dim, stage, height, width, c.mixers[s].options};
  mixer_ = add_child("token_mixer", MixerRegistry::get().create(c.mixers[s].type, mc));
  if (c.layer_scale_init[s])
    layer_scale1_ = add_child("layer_scale1", std::make_unique<Scale>(dim, static_cast<float>(*c.layer_scale_init[s])));
  if (c.res_scale_init[s])
    res_scale1_ = add_child("res_scale1", std::make_unique<Scale>(dim, static_cast<float>(*c.res_scale_init[s])));
  norm2_ = add_child("norm2", std::make_unique<Norm>(c.norms[s], dim));
  // timm: int(mlp_ratio * dim); its token-stage (attention) MLPs are nn.Linear, the others 1×1 convs.
  const bool conv1x1 = c.mixers[s].type != "attention";
  mlp_ = add_child("mlp", std::make_unique<Mlp>(dim, static_cast<int64_t>(c.mlp_ratio * static_cast<double>(dim)),
                                                c.mlp_act, c.mlp_bias, conv1x1));
  if (c.layer_scale_init[s])
    layer_scale2_ = add_child("layer_scale2", std::make_unique<Scale>(dim, static_cast<float>(*c.layer_scale_init[s])));
  if (c.res_scale_init[s])
    res_scale2_ = add_child("res_scale2", std::make_unique<Scale>(dim, static_cast<float>(*c.res_scale_init[s])));
}

namespace {
const Tensor* scale_of(const Scale* s) { return s ? &s->value() : nullptr; }
}  // namespace

Tensor MetaFormerBlock::drop_path_mask(Ctx& ctx, int64_t batch) const {
  MF_CHECK(ctx.rng != nullptr, "{}: drop path needs a random generator in training", path());
  Tensor mask = Tensor::empty({batch});
  const float keep = static_cast<float>(1.0 - drop_path_);
  for (int64_t b = 0; b < batch; ++b) mask.data()[b] = ctx.rng->uniform() < keep ? 1.f / keep : 0.f;
  return mask;
}

Tensor MetaFormerBlock::forward(Ctx& ctx, const Tensor& x) {
  if (!ctx.training) {
    Tensor branch = mixer_->run(ctx, norm1_->run(ctx, x));
    if (branch.same_memory(x)) branch = branch.clone();  // a mixer may return its input; never write over x
    Tensor h = op::scaled_residual(ctx.exec, x, scale_of(res_scale1_), branch, scale_of(layer_scale1_));
    Tensor branch2 = mlp_->run(ctx, norm2_->run(ctx, h));
    return op::scaled_residual(ctx.exec, h, scale_of(res_scale2_), branch2, scale_of(layer_scale2_));
  }
  // Training: keep the inputs of both residual adds; with drop path, mask each branch per sample.
  const bool drop = drop_path_ > 0;
  Tensor m = mixer_->run(ctx, norm1_->run(ctx, x));
  if (drop) m = op::sample_scale(ctx.exec, m, mask1_ = drop_path_mask(ctx, x.dim(0)));
  Tensor h = op::scaled_residual_new(ctx.exec, x, scale_of(res_scale1_), m, scale_of(layer_scale1_));
  Tensor p = mlp_->run(ctx, norm2_->run(ctx, h));
  if (drop) p = op::sample_scale(ctx.exec, p, mask2_ = drop_path_mask(ctx, x.dim(0)));
  Tensor y = op::scaled_residual_new(ctx.exec, h, scale_of(res_scale2_), p, scale_of(layer_scale2_));
  saved_x_ = x;
  saved_mixer_out_ = m;
  saved_h_ = h;
  saved_mlp_out_ = p;
  return y;
}

namespace {
Tensor* scale_grad(Scale* s) {
  if (!s) return nullptr;
  Parameter* p = s->param();
  return p->trainable && p->grad.defined() ? &p->grad : nullptr;
}
}  // namespace

Tensor MetaFormerBlock::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  // y = h ⊙ rs2 + p ⊙ ls2, p = mlp(norm2(h))
  auto [dh, dp] = op::scaled_residual_backward(ctx.exec, saved_h_, scale_of(res_scale2_), saved_mlp_out_,
                                               scale_of(layer_scale2_), dy, scale_grad(res_scale2_),
                                               scale_grad(layer_scale2_));
  if (mask2_.defined()) dp = op::sample_scale(ctx.exec, dp, mask2_);
  dh = op::scaled_residual(ctx.exec, dh, nullptr, norm2_->backward(ctx, mlp_->backward(ctx, dp)), nullptr);
  // h = x ⊙ rs1 + m ⊙ ls1, m = mixer(norm1(x))
  auto [dx, dm] = op::scaled_residual_backward(ctx.exec, saved_x_, scale_of(res_scale1_), saved_mixer_out_,
                                               scale_of(layer_scale1_), dh, scale_grad(res_scale1_),
                                               scale_grad(layer_scale1_));
  if (mask1_.defined()) dm = op::sample_scale(ctx.exec, dm, mask1_);
  dx = op::scaled_residual(ctx.exec, dx, nullptr, norm1_->backward(ctx, mixer_->backward(ctx, dm)), nullptr);
  saved_x_ = saved_mixer_out_ = saved_h_ = saved_mlp_out_ = mask1_ = mask2_ = Tensor();
  return dx;
}

// ------------------------------------------------------------------------------------------- stage
MetaFormerStage::MetaFormerStage(const MetaFormerConfig& c, int stage, int in_chans, int64_t height, int64_t width,
                                 const std::vector<double>& drop_path) {
  const int out = c.dims[static_cast<size_t>(stage)];
  // As timm: a stage downsamples exactly when its width changes (stage 0's reduction is the stem's).
  if (stage > 0 && in_chans != out) downsample_ = add_child("downsample", std::make_unique<Downsampling>(in_chans, out, c.downsample));
  blocks_ = add_child("blocks", std::make_unique<Sequential>());
  for (int b = 0; b < c.depths[static_cast<size_t>(stage)]; ++b)
    blocks_->append(std::make_unique<MetaFormerBlock>(c, stage, height, width, drop_path[static_cast<size_t>(b)]));
}

Tensor MetaFormerStage::forward(Ctx& ctx, const Tensor& x) {
  return blocks_->run(ctx, downsample_ ? downsample_->run(ctx, x) : x);
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

MetaFormerHead::MetaFormerHead(int64_t dim, int num_classes, const HeadSpec& spec) {
  norm_ = add_child("norm", std::make_unique<Norm>(spec.norm, dim));
  if (spec.type == "mlp")
    fc_ = add_child("fc", std::make_unique<MlpHead>(dim, num_classes, spec));
  else
    fc_ = add_child("fc", std::make_unique<Linear>(dim, num_classes, true));
}

Tensor MetaFormerHead::forward(Ctx& ctx, const Tensor& x) {
  if (ctx.training) saved_shape_ = x.shape();
  Tensor pooled = op::global_avg_pool(ctx.exec, x);
  return fc_->run(ctx, norm_->run(ctx, pooled));
}

Tensor MetaFormerHead::backward(Ctx& ctx, const Tensor& dy) {
  return op::global_avg_pool_backward(ctx.exec, norm_->backward(ctx, fc_->backward(ctx, dy)), saved_shape_);
}

// ------------------------------------------------------------------------------------------- model
MetaFormer::MetaFormer(const MetaFormerConfig& config) : config_(config) {
  config_.validate();
  const auto& c = config_;
  stem_ = add_child("stem", std::make_unique<Stem>(c.in_chans, c.dims[0], c.stem));
  stages_ = add_child("stages", std::make_unique<Sequential>());
  // Token grid of each stage at the nominal input size (needed by mixers tied to a size).
  int64_t h = ConvGeometry{c.stem.kernel_size, c.stem.kernel_size, c.stem.stride, c.stem.stride, c.stem.padding,
                           c.stem.padding}
                  .out_h(c.input.size);
  int prev = c.dims[0];
  // Stochastic depth grows linearly from 0 at the first block to drop_path_rate at the last.
  int total = 0;
  for (int d : c.depths) total += d;
  int block = 0;
  const ConvGeometry down{c.downsample.kernel_size, c.downsample.kernel_size, c.downsample.stride,
                          c.downsample.stride,      c.downsample.padding,     c.downsample.padding};
  for (size_t s = 0; s < c.num_stages(); ++s) {
    if (s > 0 && prev != c.dims[s]) h = down.out_h(h);
    std::vector<double> rates;
    for (int b = 0; b < c.depths[s]; ++b, ++block)
      rates.push_back(total > 1 ? c.drop_path_rate * block / (total - 1) : 0.0);
    stages_->append(std::make_unique<MetaFormerStage>(c, static_cast<int>(s), prev, h, h, rates));
    prev = c.dims[s];
  }
  head_ = add_child("head", std::make_unique<MetaFormerHead>(c.dims.back(), c.num_classes, c.head));
  assign_paths();
}

void MetaFormer::check_input(const Shape& s) const {
  MF_CHECK(s.ndim() == 4, "model input must be a batch of images [B, {}, H, W]; got shape {}", config_.in_chans,
           s.str());
  MF_CHECK(s[3] == config_.in_chans, "model {} takes {} input channels; got {}", config_.name, config_.in_chans, s[3]);
  MF_CHECK(s[0] >= 1, "empty batch");
  // Every stride must leave at least one pixel.
  int64_t h = s[1], w = s[2];
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
  Tensor y = stem_->run(ctx, x);
  y = stages_->run(ctx, y);
  return head_->run(ctx, y);
}

Tensor MetaFormer::backward(Ctx& ctx, const Tensor& dlogits) {
  Tensor d = head_->backward(ctx, dlogits);
  d = stages_->backward(ctx, d);
  return stem_->backward(ctx, d);
}

Tensor MetaFormer::forward_nchw(Ctx& ctx, const Tensor& x) {
  MF_CHECK(x.ndim() == 4, "model input must be [B, C, H, W]; got shape {}", x.shape().str());
  MF_CHECK(x.dim(1) == config_.in_chans, "model {} takes {} input channels; got shape {} (NCHW expected)",
           config_.name, config_.in_chans, x.shape().str());
  return run(ctx, op::nchw_to_nhwc(ctx.exec, x));
}

}  // namespace mf
