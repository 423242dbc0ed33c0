// Mamba's selective state-space mixer (S6), as Hugging Face transformers' MambaMixer computes it,
// with its parameter names, so that a MambaModel state dict loads (docs/sequences.md):
//   in_proj    [2·Di, C]: x (first Di channels) and the gate z (last Di)
//   conv1d     weight [Di, 1, K], bias [Di]: a depthwise convolution over the sequence that reads
//              only the current and K - 1 previous tokens, then SiLU: u
//   x_proj     [R + 2N, Di]: per token, dt's low-rank input (R), B (N) and C (N)
//   dt_proj    [Di, R] + bias: dt = softplus(dt_proj(·)), a step size per token and channel
//   A_log      [Di, N]: A = -exp(A_log), diagonal, one decay rate per channel and state
//   D          [Di]: the skip u · D
//   out_proj   [C, Di]
//   y = out_proj((scan(u, dt, A, B, C) + D ⊙ u) ⊙ SiLU(z)),
//   scan: h[t] = exp(dt[t] A) ⊙ h[t-1] + dt[t] B[t] u[t], output Σ_n h[t, n] C[t, n].
// Tokens are the grid's H·W in row-major order (a sequence model's grid is 1 × L). The scan runs
// per channel (op::selective_scan); its backward recomputes the states from checkpoints every
// `chunk` tokens instead of keeping all L · Di · N of them.
#include <cmath>

#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/linear.h"

namespace mf {

namespace {

// nn.Conv1d(Di, Di, K, groups=Di, padding=K-1) cut to the first L outputs: a causal depthwise conv.
class CausalConv1d : public Module {
 public:
  CausalConv1d(int64_t channels, int kernel, bool bias) {
    // nn.Conv1d's default init: U(-1/sqrt(fan_in), ...) with fan_in = K; a truncated normal of the
    // same spread serves training from scratch.
    weight_ = &add_param("weight", {channels, 1, kernel}, Init::trunc_normal(1.f / std::sqrt(3.f * kernel)), true);
    if (bias) bias_ = &add_param("bias", {channels}, Init::zeros(), false);
  }
  std::string kind() const override { return "Conv1d"; }
  std::string describe() const override {
    return fmt::format("{} channels, depthwise causal {}{}", weight_->value.dim(0), weight_->value.dim(2),
                       bias_ ? ", bias" : "");
  }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::CausalConv1d); }
  Tensor forward(Ctx& ctx, const Tensor& x) override {
    if (ctx.training) saved_x_ = x;
    return op::causal_conv1d(ctx.exec, x, v(weight_), opt(bias_));
  }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
    Tensor dx = op::causal_conv1d_backward(ctx.exec, saved_x_, v(weight_), dy, grad_of(weight_), grad_of(bias_));
    saved_x_ = Tensor();
    return dx;
  }

 private:
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  Tensor saved_x_;
};

class SelectiveSsm : public TokenMixer {
 public:
  SelectiveSsm(int64_t dim, int64_t inner, int64_t state, int64_t rank, int kernel, bool bias, bool conv_bias,
               int64_t chunk)
      : inner_(inner), state_(state), rank_(rank), chunk_(chunk) {
    in_proj_ = add_child("in_proj", std::make_unique<Linear>(dim, 2 * inner, bias));
    conv1d_ = add_child("conv1d", std::make_unique<CausalConv1d>(inner, kernel, conv_bias));
    x_proj_ = add_child("x_proj", std::make_unique<Linear>(inner, rank + 2 * state, false));
    dt_proj_ = add_child("dt_proj", std::make_unique<Linear>(rank, inner, true));
    // Mamba's initialisation for training from scratch: S4D-real A = -(1..N) in every channel, D = 1.
    // (dt_proj's bias starts at zero here, dt = softplus(0) ≈ 0.69, where Mamba draws dt in
    // [0.001, 0.1]; docs/sequences.md.)
    a_log_ = &add_param("A_log", {inner, state}, Init::log_column_index(), false);
    d_ = &add_param("D", {inner}, Init::ones(), false);
    out_proj_ = add_child("out_proj", std::make_unique<Linear>(inner, dim, bias));
  }
  std::string kind() const override { return "MambaMixer"; }
  std::string describe() const override {
    return fmt::format("inner {}, state {}, dt rank {}, scan chunk {}", inner_, state_, rank_, chunk_);
  }
  void collect_ops(std::set<OpKind>& ops) const override {
    ops.insert(OpKind::SelectiveScan);
    ops.insert(OpKind::ChannelSlice);
    ops.insert(OpKind::Activation);
  }

  Tensor forward(Ctx& ctx, const Tensor& x) override {
    const int64_t B = x.dim(0), L = x.dim(1) * x.dim(2), C = x.dim(3);
    const Tensor xz = in_proj_->run(ctx, x.reshape({B, L, C}));
    const Tensor conv = conv1d_->run(ctx, op::channel_slice(ctx.exec, xz, 0, inner_));
    const Tensor z = op::channel_slice(ctx.exec, xz, inner_, inner_);
    const Tensor u = op::activation(ctx.exec, conv, silu());
    const Tensor bc = x_proj_->run(ctx, u);
    const Tensor dt = dt_proj_->run(ctx, op::channel_slice(ctx.exec, bc, 0, rank_));
    const Tensor y = op::selective_scan(ctx.exec, u, dt, v(a_log_), bc, rank_, v(d_), z);
    if (ctx.training) {
      saved_ = {conv, z, u, bc, dt};
      saved_shape_ = x.shape();
    }
    return out_proj_->run(ctx, y).reshape(x.shape());
  }

  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    MF_CHECK(saved_.u.defined(), "{}: backward without a training forward", path());
    const int64_t B = dy.dim(0), L = dy.dim(1) * dy.dim(2);
    const Tensor dscan = out_proj_->backward(ctx, dy.reshape({B, L, dy.dim(3)}));
    op::SelectiveScanGrads g = op::selective_scan_backward(ctx.exec, saved_.u, saved_.dt, v(a_log_), saved_.bc, rank_,
                                                           v(d_), saved_.z, dscan, chunk_, grad_of(a_log_),
                                                           grad_of(d_));
    // x_proj's output gradient: dt's low-rank part from dt_proj, B's and C's from the scan.
    op::channel_slice_backward_(ctx.exec, dt_proj_->backward(ctx, g.ddt_raw), 0, g.dbc);
    const Tensor du = op::scaled_residual(ctx.exec, g.du, nullptr, x_proj_->backward(ctx, g.dbc), nullptr);
    const Tensor dconv = op::activation_backward(ctx.exec, saved_.conv, silu(), du, nullptr);
    Tensor dxz = op::zeros(ctx.exec, {B, L, 2 * inner_});
    op::channel_slice_backward_(ctx.exec, conv1d_->backward(ctx, dconv), 0, dxz);
    op::channel_slice_backward_(ctx.exec, g.dz, inner_, dxz);
    saved_ = {};
    return in_proj_->backward(ctx, dxz).reshape(saved_shape_);
  }

 private:
  static Activation silu() { return Activation{ActKind::SiLU}; }
  int64_t inner_, state_, rank_, chunk_;
  Linear* in_proj_;
  CausalConv1d* conv1d_;
  Linear* x_proj_;
  Linear* dt_proj_;
  Parameter* a_log_;
  Parameter* d_;
  Linear* out_proj_;
  struct Saved {
    Tensor conv, z, u, bc, dt;
  } saved_;
  Shape saved_shape_;
};

}  // namespace

void register_s6_mixer(MixerRegistry& r) {
  r.add({"s6", "Mamba's selective state-space scan (S6), transformers' MambaMixer (sequences)",
         [](const MixerContext& ctx) {
           MixerOptions o("s6", ctx.options);
           const int64_t state = o.get_int("d_state", 16);
           const int64_t expand = o.get_int("expand", 2);
           const int64_t inner = o.get_int("d_inner", expand * ctx.dim);
           const int64_t kernel = o.get_int("d_conv", 4);
           // transformers' "auto": ceil(hidden_size / 16)
           const int64_t rank = o.get_int("dt_rank", (ctx.dim + 15) / 16);
           const bool bias = o.get_bool("bias", false);
           const bool conv_bias = o.get_bool("conv_bias", true);
           const int64_t chunk = o.get_int("chunk", 64);
           o.finish();
           MF_CHECK(state >= 1 && state <= 1024, "s6: d_state must be in 1..1024, got {}", state);
           MF_CHECK(inner >= 1 && inner <= (1 << 20), "s6: the inner width (expand x dim, or d_inner) must be in "
                    "1..1048576, got {}", inner);
           MF_CHECK(kernel >= 1 && kernel <= 64, "s6: d_conv must be in 1..64, got {}", kernel);
           MF_CHECK(rank >= 1 && rank <= inner, "s6: dt_rank must be in 1..{} (the inner width), got {}", inner, rank);
           MF_CHECK(chunk >= 1 && chunk <= (1 << 20), "s6: chunk must be positive, got {}", chunk);
           return std::make_unique<SelectiveSsm>(ctx.dim, inner, state, rank, static_cast<int>(kernel), bias,
                                                 conv_bias, chunk);
         }});
}

}  // namespace mf
