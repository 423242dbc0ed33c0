// The `inception` token mixer: iFormer's Inception mixer (mixers/inception.h).
#include "mixers/inception.h"

#include <cmath>

#include <fmt/format.h>

#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/linear.h"

namespace mf {

namespace {
const ConvGeometry kMaxPool{3, 3, 1, 1, 1, 1};  // nn.MaxPool2d(3, stride=1, padding=1)
}  // namespace

// HighMixer: the conv half and the max-pool half of the high-frequency channels.
class InceptionHighMixer : public Module {
 public:
  explicit InceptionHighMixer(int64_t dim) : half_(dim / 2) {
    conv1_ = add_child("conv1", std::make_unique<Linear>(half_, 2 * half_, false, /*conv1x1=*/true));
    proj1_ = add_child("proj1", std::make_unique<DepthwiseConv2d>(2 * half_, 3, 1, false));
    gelu1_ = add_child("mid_gelu1", make_activation("gelu"));
    proj2_ = add_child("proj2", std::make_unique<Linear>(half_, 2 * half_, true, /*conv1x1=*/true));
    gelu2_ = add_child("mid_gelu2", make_activation("gelu"));
  }
  std::string kind() const override { return "HighMixer"; }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::MaxPool2d);
    ops.insert(OpKind::ChannelSlice);
  }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const Exec& e = ctx.exec;
    Tensor cx = gelu1_->run(ctx, proj1_->run(ctx, conv1_->run(ctx, op::channel_slice(e, x, 0, half_))));
    Tensor px_in = op::channel_slice(e, x, half_, half_);
    Tensor px = proj2_->run_then(ctx, op::max_pool2d(e, px_in, kMaxPool), *gelu2_);
    if (ctx.training) saved_px_in_ = px_in;
    return op::concat_channels(e, cx, px);
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_px_in_.defined(), "{}: backward without a training forward", path());
    const Exec& e = ctx.exec;
    Tensor dcx = conv1_->backward(ctx, proj1_->backward(ctx, gelu1_->backward(ctx, op::channel_slice(e, dy, 0, 2 * half_))));
    Tensor dpooled = proj2_->backward(ctx, gelu2_->backward(ctx, op::channel_slice(e, dy, 2 * half_, 2 * half_)));
    Tensor dpx = op::max_pool2d_backward(e, saved_px_in_, kMaxPool, dpooled);
    saved_px_in_ = Tensor();
    return op::concat_channels(e, dcx, dpx);
  }

 private:
  int64_t half_;
  Linear* conv1_;
  DepthwiseConv2d* proj1_;
  ActivationLayer* gelu1_;
  Linear* proj2_;
  ActivationLayer* gelu2_;
  Tensor saved_px_in_;
};

// LowMixer: attention over the (average-pooled) token grid, upsampled back.
class InceptionLowMixer : public Module {
 public:
  InceptionLowMixer(int64_t dim, int heads, int pool_size) : heads_(heads), head_dim_(dim / heads), pool_(pool_size) {
    qkv_ = add_child("qkv", std::make_unique<Linear>(dim, 3 * dim, true));
  }
  std::string kind() const override { return "LowMixer"; }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::Attention);
    if (pool_ > 1) {
      ops.insert(OpKind::AvgPool2d);
      ops.insert(OpKind::UpsampleNearest);
    }
  }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const Exec& e = ctx.exec;
    if (pool_ > 1)
      MF_CHECK(x.dim(1) % pool_ == 0 && x.dim(2) % pool_ == 0, "{}: a {}x{} token grid does not divide into the "
               "{}x{} pooling windows of iFormer's low-frequency mixer", path(), x.dim(1), x.dim(2), pool_, pool_);
    const Tensor xa = pool_ > 1 ? op::avg_pool2d(e, x, pool_) : x;
    const int64_t B = xa.dim(0), h = xa.dim(1), w = xa.dim(2), C = xa.dim(3);
    Tensor qkv = qkv_->run(ctx, xa.reshape({B, h * w, C}));
    Tensor o = op::attention(e, qkv, heads_, head_dim_, scale(), ctx.training).reshape({B, h, w, C});
    if (ctx.training) saved_qkv_ = qkv, saved_pooled_ = xa.shape();
    return pool_ > 1 ? op::upsample_nearest(e, o, pool_) : o;
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_qkv_.defined(), "{}: backward without a training forward", path());
    const Exec& e = ctx.exec;
    const Tensor d = pool_ > 1 ? op::upsample_nearest_backward(e, dy, pool_) : dy;
    const int64_t B = d.dim(0), N = d.dim(1) * d.dim(2), C = d.dim(3);
    Tensor dqkv = op::attention_backward(e, saved_qkv_, heads_, head_dim_, scale(), d.reshape({B, N, C}));
    Tensor dxa = qkv_->backward(ctx, dqkv).reshape(saved_pooled_);
    saved_qkv_ = Tensor();
    return pool_ > 1 ? op::avg_pool2d_backward(e, dxa, pool_) : dxa;
  }

 private:
  float scale() const { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim_))); }
  int heads_, head_dim_, pool_;
  Linear* qkv_;
  Tensor saved_qkv_;
  Shape saved_pooled_;
};

InceptionMixer::InceptionMixer(int64_t dim, int heads, int attention_heads, int pool_size)
    : dim_(dim), attention_heads_(attention_heads), pool_size_(pool_size) {
  MF_CHECK(heads >= 1 && dim % heads == 0, "inception: the width {} does not split into {} heads", dim, heads);
  const int64_t head_dim = dim / heads;
  low_ = attention_heads * head_dim;
  high_ = dim - low_;
  MF_CHECK(attention_heads >= 1 && high_ >= 2 && high_ % 2 == 0,
           "inception: {} of {} heads for attention leave {} high-frequency channels (they must be positive and "
           "even: half go to the conv branch, half to the max-pool branch)", attention_heads, heads, high_);
  MF_CHECK(pool_size >= 1 && pool_size <= 8, "inception: pool_size {} is out of range [1, 8]", pool_size);
  const int64_t fused = 2 * high_ + low_;
  high_mixer_ = add_child("high_mixer", std::make_unique<InceptionHighMixer>(high_));
  low_mixer_ = add_child("low_mixer", std::make_unique<InceptionLowMixer>(low_, attention_heads, pool_size));
  conv_fuse_ = add_child("conv_fuse", std::make_unique<DepthwiseConv2d>(fused, 3, 1, false));
  proj_ = add_child("proj", std::make_unique<Linear>(fused, dim, true, /*conv1x1=*/true));
}

std::string InceptionMixer::describe() const {
  return fmt::format("{} high-frequency channels (conv, max pool), {} low (attention, {} heads{})", high_, low_,
                     attention_heads_, pool_size_ > 1 ? fmt::format(", pooled {}x{}", pool_size_, pool_size_) : "");
}

void InceptionMixer::collect_ops(std::set<OpKind>& ops) const {
  ops.insert(OpKind::ChannelSlice);
  ops.insert(OpKind::ScaledResidual);
}

Tensor InceptionMixer::forward(Ctx& ctx, const Tensor& x) {
  MF_CHECK(x.ndim() == 4 && x.dim(3) == dim_, "{}: expected [B, H, W, {}], got {}", path(), dim_, x.shape().str());
  const Exec& e = ctx.exec;
  Tensor hx = high_mixer_->run(ctx, op::channel_slice(e, x, 0, high_));
  Tensor lx = low_mixer_->run(ctx, op::channel_slice(e, x, high_, low_));
  Tensor f = op::concat_channels(e, hx, lx);
  return proj_->run(ctx, op::scaled_residual(e, f, nullptr, conv_fuse_->run(ctx, f), nullptr));  // f + conv_fuse(f)
}

Tensor InceptionMixer::backward(Ctx& ctx, const Tensor& dy) {
  const Exec& e = ctx.exec;
  Tensor dsum = proj_->backward(ctx, dy);
  Tensor df = op::scaled_residual(e, dsum, nullptr, conv_fuse_->backward(ctx, dsum), nullptr);
  Tensor dhx = high_mixer_->backward(ctx, op::channel_slice(e, df, 0, 2 * high_));
  Tensor dlx = low_mixer_->backward(ctx, op::channel_slice(e, df, 2 * high_, low_));
  return op::concat_channels(e, dhx, dlx);
}

void register_inception_mixer(MixerRegistry& r) {
  r.add({"inception", "iFormer's Inception mixer: high-frequency channels through conv and max-pool branches, "
         "low-frequency ones through (pooled) attention, fused by a depthwise conv and a 1x1 projection",
         [](const MixerContext& ctx) {
           MixerOptions o("inception", ctx.options);
           // iFormer: head dim 32 (at least two heads here, so that one can be attention's and the other's
           // channels the high-frequency part); half the heads for attention; pooling in the first two
           // stages, where the grid allows it.
           const int64_t heads = o.get_int("heads", std::max<int64_t>(2, ctx.dim / 32));
           const int64_t attention = o.get_int("attention_heads", std::max<int64_t>(1, heads / 2));
           const bool even = ctx.height % 2 == 0 && ctx.width % 2 == 0;
           const int64_t pool = o.get_int("pool_size", ctx.stage < 2 && even ? 2 : 1);
           o.finish();
           MF_CHECK(heads >= 1 && heads <= 1024 && attention >= 1 && attention <= heads,
                    "inception: heads {} and attention_heads {} must satisfy 1 <= attention_heads <= heads <= 1024",
                    heads, attention);
           MF_CHECK(pool >= 1 && pool <= 8, "inception: pool_size {} is out of range [1, 8]", pool);
           MF_CHECK(ctx.height % pool == 0 && ctx.width % pool == 0, "inception: stage {}'s {}x{} token grid does not "
                    "divide into {}x{} pooling windows", ctx.stage, ctx.height, ctx.width, pool, pool);
           return std::make_unique<InceptionMixer>(ctx.dim, static_cast<int>(heads), static_cast<int>(attention),
                                                   static_cast<int>(pool));
         }});
}

}  // namespace mf
