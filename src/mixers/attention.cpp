// CAFormer's mixer: vanilla multi-head self-attention over all H·W tokens (row-major order), head
// dimension 32, no biases, no position encoding. Keys: qkv [3·A, C], proj [C, A] with A = heads·32.
// "causal": true lets token i attend only to tokens j <= i (sequences, docs/sequences.md; positions
// come from the sequence stem).
#include <cmath>

#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/linear.h"

namespace mf {

namespace {
class Attention : public TokenMixer {
 public:
  Attention(int64_t dim, int head_dim, int heads, bool qkv_bias, bool proj_bias, bool causal)
      : head_dim_(head_dim), heads_(heads), causal_(causal) {
    const int64_t attn_dim = static_cast<int64_t>(heads) * head_dim;
    qkv_ = add_child("qkv", std::make_unique<Linear>(dim, 3 * attn_dim, qkv_bias));
    proj_ = add_child("proj", std::make_unique<Linear>(attn_dim, dim, proj_bias));
  }
  std::string kind() const override { return "Attention"; }
  std::string describe() const override {
    return fmt::format("{} heads x {}{}", heads_, head_dim_, causal_ ? ", causal" : "");
  }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(causal_ ? OpKind::CausalAttention : OpKind::Attention);
  }

  Tensor forward(Ctx& ctx, const Tensor& x) override { return mix(ctx, x, nullptr); }
  Tensor run_residual_train(Ctx& ctx, const Tensor& n, const Tensor& skip) override {
    return ctx.training ? mix(ctx, n, &skip) : Tensor();
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    const int64_t B = dy.dim(0), N = dy.dim(1) * dy.dim(2), C = dy.dim(3);
    Tensor d_attn = proj_->backward(ctx, dy.reshape({B, N, C}));
    Tensor d_qkv = causal_ ? op::causal_attention_backward(ctx.exec, saved_qkv_, heads_, head_dim_, scale(), d_attn)
                           : op::attention_backward(ctx.exec, saved_qkv_, heads_, head_dim_, scale(), d_attn,
                                                    &saved_o_, &saved_stats_);
    saved_qkv_ = saved_o_ = saved_stats_ = Tensor();
    return qkv_->backward(ctx, d_qkv).reshape(saved_shape_);
  }

 private:
  // The mixer's output, or skip + it (skip not null: training's fused residual, run_residual_train).
  Tensor mix(Ctx& ctx, const Tensor& x, const Tensor* skip) {
    const int64_t B = x.dim(0), N = x.dim(1) * x.dim(2), C = x.dim(3);
    Tensor qkv = qkv_->run(ctx, x.reshape({B, N, C}));
    Tensor stats;
    Tensor o = causal_ ? op::causal_attention(ctx.exec, qkv, heads_, head_dim_, scale())
                       : op::attention(ctx.exec, qkv, heads_, head_dim_, scale(), ctx.training,
                                       ctx.training ? &stats : nullptr);
    if (ctx.training) {
      saved_qkv_ = qkv;
      saved_shape_ = x.shape();
      // Where the backend kept the softmax's statistics, its backward reads them with the output
      // (which proj keeps anyway: no memory of its own).
      saved_o_ = stats.defined() ? o : Tensor();
      saved_stats_ = stats;
    }
    Tensor y = skip ? proj_->run_residual_train(ctx, o, skip->reshape({B, N, C})) : proj_->run(ctx, o);
    return y.reshape(x.shape());
  }

  float scale() const { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim_))); }
  int head_dim_, heads_;
  bool causal_;
  Linear* qkv_;
  Linear* proj_;
  Tensor saved_qkv_, saved_o_, saved_stats_;
  Shape saved_shape_;
};
}  // namespace

void register_attention_mixer(MixerRegistry& r) {
  r.add({"attention", "multi-head self-attention, head dim 32, no biases (CAFormer)", [](const MixerContext& ctx) {
           MixerOptions o("attention", ctx.options);
           const int64_t head_dim = o.get_int("head_dim", 32);
           int64_t heads = o.get_int("num_heads", 0);
           const bool qkv_bias = o.get_bool("qkv_bias", false);
           const bool proj_bias = o.get_bool("proj_bias", false);
           const bool causal = o.get_bool("causal", false);
           o.finish();
           MF_CHECK(head_dim >= 1 && head_dim <= 1024, "attention: head_dim must be in 1..1024, got {}", head_dim);
           if (heads == 0) heads = std::max<int64_t>(1, ctx.dim / head_dim);  // timm: dim // head_dim, at least 1
           MF_CHECK(heads >= 1 && heads <= 1024, "attention: num_heads must be in 1..1024, got {}", heads);
           return std::make_unique<Attention>(ctx.dim, static_cast<int>(head_dim), static_cast<int>(heads), qkv_bias,
                                              proj_bias, causal);
         }});
}

}  // namespace mf
