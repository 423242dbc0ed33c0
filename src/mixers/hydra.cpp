// Hydra's bidirectional state-space mixer ("Hydra: Bidirectional State Space Models Through
// Generalized Matrix Mixers", Hwang et al. 2024): the quasiseparable matrix mixer
//   QS(X) = shift(SS(X)) + flip(shift(SS(flip(X)))) + diag(δ) X,
// with Mamba's S6 (a diagonal A per channel and state, input-dependent dt, B, C) as the semiseparable
// SS, one scan forward and one backward sharing every projection (docs/sequences.md):
//   in_proj   [2·Di, C]: x (first Di channels) and the gate z (last Di)
//   conv1d    weight [Di, 1, 1, K], bias [Di]: a depthwise conv over the sequence, centred (padding
//             K / 2: Hydra's conv is not causal), then SiLU: u
//   x_proj    [R + 4N, Di]: dt's low-rank input (R), then B_f, C_f, B_b, C_b (N each)
//   dt_proj   [2·Di, R] + bias: dt_f, dt_b = softplus(dt_proj(·))
//   A_log     [Di, N]: A = -exp(A_log), shared by the two directions (as Hydra shares its A)
//   fc_D      [H, Di], D [H]: the diagonal δ = fc_D(u) + D, one value per head of Di / H channels
//   norm      weight [Di]: Hydra's gated RMSNorm, RMSNorm(q) · SiLU(z) (norm before gate)
//   out_proj  [C, Di]
// Tokens are the grid's H·W in row-major order (a sequence model's grid is 1 × L); the scans run
// per channel (op::bidirectional_scan, whose cpu kernel shares S6's scan code) and their backward
// pass recomputes the states from checkpoints every `chunk` tokens.
#include <cmath>

#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/linear.h"
#include "nn/norm.h"

namespace mf {

namespace {

// A depthwise convolution along the sequence, kernel K (odd), zero padding K / 2 on both sides: a
// depthwise conv2d with a 1 × K kernel on the 1 × L grid.
class SequenceConv : public Module {
 public:
  SequenceConv(int64_t channels, int kernel, bool bias) : g_{1, kernel, 1, 1, 0, kernel / 2} {
    weight_ = &add_param("weight", {channels, 1, 1, kernel}, Init::trunc_normal(1.f / std::sqrt(3.f * kernel)), true);
    if (bias) bias_ = &add_param("bias", {channels}, Init::zeros(), false);
  }
  std::string kind() const override { return "Conv1d"; }
  std::string describe() const override {
    return fmt::format("{} channels, depthwise {} centred{}", weight_->value.dim(0), g_.kernel_w,
                       bias_ ? ", bias" : "");
  }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::DepthwiseConv2d); }
  // x [B, L, C] -> [B, L, C]
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const Tensor grid = x.reshape({x.dim(0), 1, x.dim(1), x.dim(2)});
    if (ctx.training) saved_x_ = grid;
    return op::depthwise_conv2d(ctx.exec, grid, v(weight_), opt(bias_), g_).reshape(x.shape());
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
    Tensor dx = op::depthwise_conv2d_backward(ctx.exec, saved_x_, v(weight_), g_, dy.reshape(saved_x_.shape()),
                                              grad_of(weight_), grad_of(bias_));
    saved_x_ = Tensor();
    return dx.reshape(dy.shape());
  }

 private:
  ConvGeometry g_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  Tensor saved_x_;
};

class HydraMixer : public TokenMixer {
 public:
  HydraMixer(int64_t dim, int64_t inner, int64_t state, int64_t rank, int kernel, int64_t heads, bool bias,
             bool conv_bias, int64_t chunk)
      : inner_(inner), state_(state), rank_(rank), heads_(heads), chunk_(chunk) {
    in_proj_ = add_child("in_proj", std::make_unique<Linear>(dim, 2 * inner, bias));
    conv1d_ = add_child("conv1d", std::make_unique<SequenceConv>(inner, kernel, conv_bias));
    x_proj_ = add_child("x_proj", std::make_unique<Linear>(inner, rank + 4 * state, false));
    dt_proj_ = add_child("dt_proj", std::make_unique<Linear>(rank, 2 * inner, true));
    // Mamba's S4D-real A = -(1..N) in every channel for training from scratch (Hydra starts its
    // per-head scalar A at -1); the diagonal starts at D = 1 (Hydra's), fc_D small.
    a_log_ = &add_param("A_log", {inner, state}, Init::log_column_index(), false);
    fc_d_ = add_child("fc_D", std::make_unique<Linear>(inner, heads, false));
    d_ = &add_param("D", {heads}, Init::ones(), false);
    norm_ = add_child("norm", std::make_unique<Norm>(NormSpec{"rms_norm", 1e-5, false}, inner));
    out_proj_ = add_child("out_proj", std::make_unique<Linear>(inner, dim, bias));
  }
  std::string kind() const override { return "Hydra"; }
  std::string describe() const override {
    return fmt::format("inner {}, state {}, dt rank {}, {} diagonal heads, scan chunk {}", inner_, state_, rank_,
                       heads_, chunk_);
  }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::BidirectionalScan);
    ops.insert(OpKind::ChannelSlice);
    ops.insert(OpKind::Activation);
    ops.insert(OpKind::Glu);
  }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const int64_t B = x.dim(0), L = x.dim(1) * x.dim(2), C = x.dim(3);
    const Tensor xz = in_proj_->run(ctx, x.reshape({B, L, C}));
    const Tensor conv = conv1d_->run(ctx, op::channel_slice(ctx.exec, xz, 0, inner_));
    const Tensor u = op::activation(ctx.exec, conv, silu());
    const Tensor bc = x_proj_->run(ctx, u);
    const Tensor dt = dt_proj_->run(ctx, op::channel_slice(ctx.exec, bc, 0, rank_));
    const Tensor dd = fc_d_->run(ctx, u);
    const Tensor q = op::bidirectional_scan(ctx.exec, u, dt, v(a_log_), bc, rank_, dd, v(d_));
    const Tensor n = norm_->run(ctx, q);
    // SiLU(z) ⊙ n: glu's gate is xz's z window, its value all of n
    const Tensor y = op::glu(ctx.exec, xz, &n, inner_, 0, inner_, silu());
    if (ctx.training) {
      saved_ = {xz, conv, u, bc, dt, dd, n};
      saved_shape_ = x.shape();
    }
    return out_proj_->run(ctx, y).reshape(x.shape());
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_.u.defined(), "{}: backward without a training forward", path());
    const int64_t B = dy.dim(0), L = dy.dim(1) * dy.dim(2);
    const Tensor dgated = out_proj_->backward(ctx, dy.reshape({B, L, dy.dim(3)}));
    Tensor dn = op::zeros(ctx.exec, saved_.n.shape());
    Tensor dxz = op::glu_backward(ctx.exec, saved_.xz, &saved_.n, inner_, 0, silu(), dgated, &dn);
    const Tensor dq = norm_->backward(ctx, dn);
    op::BidirectionalScanGrads g =
        op::bidirectional_scan_backward(ctx.exec, saved_.u, saved_.dt, v(a_log_), saved_.bc, rank_, saved_.dd, v(d_),
                                        dq, chunk_, grad_of(a_log_), grad_of(d_));
    const Tensor du_diag = fc_d_->backward(ctx, g.ddd);
    // x_proj's output gradient: dt's low-rank part from dt_proj, the B's and C's from the scans.
    op::channel_slice_backward_(ctx.exec, dt_proj_->backward(ctx, g.ddt_raw), 0, g.dbc);
    const Tensor du = op::scaled_residual(ctx.exec, op::scaled_residual(ctx.exec, g.du, nullptr, du_diag, nullptr),
                                          nullptr, x_proj_->backward(ctx, g.dbc), nullptr);
    const Tensor dconv = op::activation_backward(ctx.exec, saved_.conv, silu(), du, nullptr);
    op::channel_slice_backward_(ctx.exec, conv1d_->backward(ctx, dconv), 0, dxz);
    saved_ = {};
    return in_proj_->backward(ctx, dxz).reshape(saved_shape_);
  }

 private:
  static Activation silu() { return Activation{ActKind::SiLU}; }
  int64_t inner_, state_, rank_, heads_, chunk_;
  Linear* in_proj_;
  SequenceConv* conv1d_;
  Linear* x_proj_;
  Linear* dt_proj_;
  Parameter* a_log_;
  Linear* fc_d_;
  Parameter* d_;
  Norm* norm_;
  Linear* out_proj_;
  struct Saved {
    Tensor xz, conv, u, bc, dt, dd, n;
  } saved_;
  Shape saved_shape_;
};

}  // namespace

void register_hydra_mixer(MixerRegistry& r) {
  r.add({"hydra", "Hydra's bidirectional SSM: quasiseparable forward + backward selective scans (sequences)",
         [](const MixerContext& ctx) {
           MixerOptions o("hydra", ctx.options);
           const int64_t state = o.get_int("d_state", 16);
           const int64_t expand = o.get_int("expand", 2);
           const int64_t inner = o.get_int("d_inner", expand * ctx.dim);
           const int64_t kernel = o.get_int("d_conv", 7);
           const int64_t rank = o.get_int("dt_rank", (ctx.dim + 15) / 16);
           const int64_t headdim = o.get_int("headdim", std::min<int64_t>(64, inner));
           const bool bias = o.get_bool("bias", false);
           const bool conv_bias = o.get_bool("conv_bias", true);
           const int64_t chunk = o.get_int("chunk", 64);
           o.finish();
           MF_CHECK(state >= 1 && state <= 1024, "hydra: d_state must be in 1..1024, got {}", state);
           MF_CHECK(inner >= 1 && inner <= (1 << 20), "hydra: the inner width (expand x dim, or d_inner) must be in "
                    "1..1048576, got {}", inner);
           MF_CHECK(kernel >= 1 && kernel <= 63 && kernel % 2 == 1, "hydra: d_conv must be odd, in 1..63 (a centred "
                    "window), got {}", kernel);
           MF_CHECK(rank >= 1 && rank <= inner, "hydra: dt_rank must be in 1..{} (the inner width), got {}", inner,
                    rank);
           MF_CHECK(headdim >= 1 && inner % headdim == 0, "hydra: headdim {} must divide the inner width {}", headdim,
                    inner);
           MF_CHECK(chunk >= 1 && chunk <= (1 << 20), "hydra: chunk must be positive, got {}", chunk);
           return std::make_unique<HydraMixer>(ctx.dim, inner, state, rank, static_cast<int>(kernel), inner / headdim,
                                               bias, conv_bias, chunk);
         }});
}

}  // namespace mf
