// PoNet's pooling token mixer ("PoNet: Pooling Network for Efficient Token Mixing in Long Sequences",
// Tan et al., ICLR 2022), linear in the sequence length (docs/sequences.md):
//   proj      [6·C, C] + bias: per token Q, K, V (global aggregation), O (the fusion's multiplier),
//             S (segment max-pooling) and Lo (local max-pooling)
//   global aggregation, per head: g = mean of Q over the tokens, then one attention step of that
//             single query over the sequence: g' = Σ_t softmax_t(<g, K[t]> / sqrt(head_dim)) V[t]
//   segment max-pooling: s[t] = max of S over t's segment; `segments` segments of L / segments + 1
//             tokens (the authors' LRA code's split; the last is shorter)
//   local max-pooling: l[t] = max of Lo over the `local_kernel` tokens around t
//   fusion:   o[t] = O[t] ⊙ (g' + s[t]) + l[t], then out_proj [C, C] + bias
// The pooling and fusion are one op (op::ponet_pool); the projections are Linears.
#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/linear.h"

namespace mf {

namespace {

class PonetMixer : public TokenMixer {
 public:
  PonetMixer(int64_t dim, int heads, int64_t segments, int local_kernel)
      : dim_(dim), heads_(heads), segments_(segments), local_(local_kernel) {
    proj_ = add_child("proj", std::make_unique<Linear>(dim, 6 * dim, true));
    out_proj_ = add_child("out_proj", std::make_unique<Linear>(dim, dim, true));
  }
  std::string kind() const override { return "PoNet"; }
  std::string describe() const override {
    return fmt::format("{} heads, {} segments, local window {}", heads_, segments_, local_);
  }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::PonetPool); }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const int64_t B = x.dim(0), L = x.dim(1) * x.dim(2);
    const Tensor p = proj_->run(ctx, x.reshape({B, L, dim_}));
    const Tensor o = op::ponet_pool(ctx.exec, p, heads_, segment_length(L), local_);
    if (ctx.training) {
      saved_p_ = p;
      saved_shape_ = x.shape();
    }
    return out_proj_->run(ctx, o).reshape(x.shape());
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_p_.defined(), "{}: backward without a training forward", path());
    const int64_t B = dy.dim(0), L = dy.dim(1) * dy.dim(2);
    const Tensor dout = out_proj_->backward(ctx, dy.reshape({B, L, dim_}));
    const Tensor dp = op::ponet_pool_backward(ctx.exec, saved_p_, heads_, segment_length(L), local_, dout);
    saved_p_ = Tensor();
    return proj_->backward(ctx, dp).reshape(saved_shape_);
  }

 private:
  // the authors' get_segment_index: L // segment_num + 1 tokens per segment
  int64_t segment_length(int64_t L) const { return L / segments_ + 1; }
  int64_t dim_;
  int heads_;
  int64_t segments_;
  int local_;
  Linear* proj_;
  Linear* out_proj_;
  Tensor saved_p_;
  Shape saved_shape_;
};

}  // namespace

void register_ponet_mixer(MixerRegistry& r) {
  r.add({"ponet", "PoNet's multi-granularity pooling: global attention-pooling, segment and local max (sequences)",
         [](const MixerContext& ctx) {
           MixerOptions o("ponet", ctx.options);
           const int64_t head_dim = o.get_int("head_dim", std::min<int64_t>(32, ctx.dim));
           const int64_t segments = o.get_int("segments", 16);
           const int64_t local = o.get_int("local_kernel", 3);
           o.finish();
           MF_CHECK(head_dim >= 1 && ctx.dim % head_dim == 0, "ponet: head_dim {} must divide the {} channels",
                    head_dim, ctx.dim);
           MF_CHECK(segments >= 1 && segments <= (1 << 24), "ponet: segments must be positive, got {}", segments);
           MF_CHECK(local >= 1 && local <= 255 && local % 2 == 1, "ponet: local_kernel must be odd, in 1..255, got {}",
                    local);
           return std::make_unique<PonetMixer>(ctx.dim, static_cast<int>(ctx.dim / head_dim), segments,
                                               static_cast<int>(local));
         }});
}

}  // namespace mf
