#include "ops/ops.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "data/device_crops.h"
#include "ops/op_checks.h"
#include "ops/timed.h"

namespace mf {

int64_t OpProfile::total_macs() const {
  int64_t t = 0;
  for (auto m : macs) t += m;
  return t;
}

double OpProfile::total_seconds() const {
  double t = 0;
  for (auto s : seconds) t += s;
  return t;
}

namespace op {
using detail::check_grad;
using detail::check_rank;
using detail::check_vec;
using detail::out;

namespace {
// Checks a linear's arguments and allocates its output [..., N].
Tensor linear_output(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b) {
  MF_CHECK(x.ndim() >= 1, "linear: input must have at least one dimension");
  const bool conv1x1 = w.ndim() == 4 && w.dim(2) == 1 && w.dim(3) == 1;
  MF_CHECK(w.ndim() == 2 || conv1x1, "linear: weight must be [out, in] or [out, in, 1, 1], got {}", w.shape().str());
  const int64_t N = w.dim(0), K = w.dim(1);
  MF_CHECK(x.shape().last() == K, "linear: input has {} features, weight expects {}", x.shape().last(), K);
  check_vec(b, N, "bias", OpKind::Linear);
  Shape ys = x.shape();
  ys[-1] = N;
  return out(e, ys);
}
}  // namespace

Tensor linear(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b) {
  Tensor y = linear_output(e, x, w, b);
  Timed t(e, OpKind::Linear, x.shape().rows() * w.dim(1) * w.dim(0));
  e.backend->linear(x, w, b, y);
  return y;
}

Tensor linear_scaled_residual(const Exec& e, const Tensor& h, const Tensor& w, const Tensor* b, const Tensor& ls,
                              const Tensor& skip) {
  Tensor y = linear_output(e, h, w, b);
  MF_CHECK(skip.shape() == y.shape(), "linear_scaled_residual: the residual {} does not fit the output {}",
           skip.shape().str(), y.shape().str());
  check_vec(&ls, w.dim(0), "layer_scale", OpKind::Linear);
  Timed t(e, OpKind::Linear, h.shape().rows() * w.dim(1) * w.dim(0));
  e.backend->linear_scaled_residual(h, w, b, &ls, skip, y);
  return y;
}

Tensor linear_residual(const Exec& e, const Tensor& h, const Tensor& w, const Tensor* b, const Tensor& skip) {
  Tensor y = linear_output(e, h, w, b);
  MF_CHECK(skip.shape() == y.shape(), "linear_residual: the residual {} does not fit the output {}", skip.shape().str(),
           y.shape().str());
  Timed t(e, OpKind::Linear, h.shape().rows() * w.dim(1) * w.dim(0));
  e.backend->linear_scaled_residual(h, w, b, nullptr, skip, y);
  return y;
}

Tensor linear_act(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, const Activation& act) {
  if (act.kind == ActKind::Identity) return linear(e, x, w, b);
  Tensor y = linear_output(e, x, w, b);
  Timed t(e, OpKind::Linear, x.shape().rows() * w.dim(1) * w.dim(0));
  e.backend->linear_act(x, w, b, act, y);
  return y;
}

std::pair<Tensor, Tensor> linear_act_train(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b,
                                           const Activation& act) {
  if (act.kind == ActKind::Identity) {
    Tensor y = linear(e, x, w, b);
    return {y, y};
  }
  Tensor y = linear_output(e, x, w, b);
  Tensor pre = out(e, y.shape());
  Timed t(e, OpKind::Linear, x.shape().rows() * w.dim(1) * w.dim(0));
  e.backend->linear_act_train(x, w, b, act, pre, y);
  return {y, pre};
}

namespace {
void check_branch(const Tensor& x, const BranchNorm& norm, const BranchScales& scales) {
  const OpKind kind = norm.type == BranchNorm::Type::layer_norm ? OpKind::LayerNorm : OpKind::GroupNorm1;
  MF_CHECK(norm.weight != nullptr, "a fused block branch needs its norm's weight");
  check_vec(norm.weight, x.shape().last(), "norm weight", kind);
  check_vec(norm.bias, x.shape().last(), "norm bias", kind);
  check_vec(scales.res_scale, x.shape().last(), "res scale", OpKind::ScaledResidual);
  check_vec(scales.layer_scale, x.shape().last(), "layer scale", OpKind::ScaledResidual);
  MF_CHECK(x.ndim() >= 2, "a fused block branch needs a batch dimension, got {}", x.shape().str());
}
}  // namespace

namespace {
void check_mlp_branch(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1, const Tensor& w2,
                      const Tensor* b2, const BranchScales& scales) {
  check_branch(x, norm, scales);
  MF_CHECK(w1.dim(1) == x.shape().last() && w2.dim(1) == w1.dim(0) && w2.dim(0) == x.shape().last(),
           "mlp_branch: weights {} and {} do not map {} features back to themselves", w1.shape().str(),
           w2.shape().str(), x.shape().last());
  check_vec(b1, w1.dim(0), "fc1 bias", OpKind::Linear);
  check_vec(b2, w2.dim(0), "fc2 bias", OpKind::Linear);
}
}  // namespace

Tensor mlp_branch(const Exec& e, const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                  const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales) {
  check_mlp_branch(x, norm, w1, b1, w2, b2, scales);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::Linear, x.shape().rows() * w1.dim(0) * (w1.dim(1) + w2.dim(0)));
  e.backend->mlp_branch(x, norm, w1, b1, act, w2, b2, scales, y);
  return y;
}

Tensor mlp_branch_(const Exec& e, Tensor x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                   const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales) {
  if (!x.sole_owner() || !e.backend->mlp_branch_in_place(scales) || x.device() != e.backend->device() ||
      x.dtype() != e.backend->activation_dtype())
    return mlp_branch(e, x, norm, w1, b1, act, w2, b2, scales);
  check_mlp_branch(x, norm, w1, b1, w2, b2, scales);
  Timed t(e, OpKind::Linear, x.shape().rows() * w1.dim(0) * (w1.dim(1) + w2.dim(0)));
  Tensor y = x;  // the same storage
  e.backend->mlp_branch(x, norm, w1, b1, act, w2, b2, scales, y);
  return x;
}

Tensor gated_cnn_branch(const Exec& e, const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                        int64_t hidden, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                        const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales) {
  check_rank(x, 4, OpKind::DepthwiseConv2d);
  check_branch(x, norm, scales);
  const int64_t C = x.dim(3), conv_ch = dw_w.ndim() == 4 ? dw_w.dim(0) : -1;
  MF_CHECK(hidden >= 1 && w1.dim(0) == 2 * hidden && w1.dim(1) == C && w2.dim(0) == C && w2.dim(1) == hidden,
           "gated_cnn_branch: weights {} and {} do not fit {} features and a hidden width of {}", w1.shape().str(),
           w2.shape().str(), C, hidden);
  MF_CHECK(conv_ch >= 1 && conv_ch <= hidden && dw_w.dim(1) == 1 && dw_w.dim(2) == g.kernel_h &&
               dw_w.dim(3) == g.kernel_w,
           "gated_cnn_branch: depthwise weight {} does not fit a hidden width of {}", dw_w.shape().str(), hidden);
  MF_CHECK(g.out_h(x.dim(1)) == x.dim(1) && g.out_w(x.dim(2)) == x.dim(2),
           "gated_cnn_branch: the depthwise convolution must keep the size {}x{}", x.dim(1), x.dim(2));
  check_vec(b1, 2 * hidden, "fc1 bias", OpKind::Linear);
  check_vec(dw_b, conv_ch, "depthwise bias", OpKind::DepthwiseConv2d);
  check_vec(b2, C, "fc2 bias", OpKind::Linear);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::Linear, x.shape().rows() * (3 * hidden * C + conv_ch * g.kernel_h * g.kernel_w));
  e.backend->gated_cnn_branch(x, norm, w1, b1, hidden, dw_w, dw_b, g, act, w2, b2, scales, y);
  return y;
}

Tensor sepconv_branch(const Exec& e, const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                      const Activation& act, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                      const Tensor& w2, const Tensor* b2, const BranchScales& scales) {
  check_rank(x, 4, OpKind::DepthwiseConv2d);
  check_branch(x, norm, scales);
  const int64_t C = x.dim(3), M = w1.dim(0);
  MF_CHECK(w1.dim(1) == C && w2.dim(0) == C && w2.dim(1) == M,
           "sepconv_branch: weights {} and {} do not map {} features back to themselves", w1.shape().str(),
           w2.shape().str(), C);
  MF_CHECK(dw_w.ndim() == 4 && dw_w.dim(0) == M && dw_w.dim(1) == 1 && dw_w.dim(2) == g.kernel_h &&
               dw_w.dim(3) == g.kernel_w,
           "sepconv_branch: depthwise weight {} does not fit {} channels", dw_w.shape().str(), M);
  MF_CHECK(g.out_h(x.dim(1)) == x.dim(1) && g.out_w(x.dim(2)) == x.dim(2),
           "sepconv_branch: the depthwise convolution must keep the size {}x{}", x.dim(1), x.dim(2));
  check_vec(b1, M, "pwconv1 bias", OpKind::Linear);
  check_vec(dw_b, M, "depthwise bias", OpKind::DepthwiseConv2d);
  check_vec(b2, C, "pwconv2 bias", OpKind::Linear);
  Tensor y = out(e, x.shape());
  // Profiled as GEMM work (its larger part); MACs of the three products.
  Timed t(e, OpKind::Linear, x.shape().rows() * M * (2 * C + g.kernel_h * g.kernel_w));
  e.backend->sepconv_branch(x, norm, w1, b1, act, dw_w, dw_b, g, w2, b2, scales, y);
  return y;
}

Tensor depthwise_linear(const Exec& e, const Tensor& x, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                        const Tensor& w, const Tensor* b) {
  check_rank(x, 4, OpKind::DepthwiseConv2d);
  MF_CHECK(dw_w.ndim() == 4 && dw_w.dim(0) == x.dim(3) && dw_w.dim(1) == 1 && dw_w.dim(2) == g.kernel_h &&
               dw_w.dim(3) == g.kernel_w,
           "depthwise_linear: depthwise weight {} does not fit input {}", dw_w.shape().str(), x.shape().str());
  check_vec(dw_b, x.dim(3), "depthwise bias", OpKind::DepthwiseConv2d);
  MF_CHECK(w.dim(1) == x.dim(3), "depthwise_linear: pointwise weight {} does not take {} channels", w.shape().str(),
           x.dim(3));
  check_vec(b, w.dim(0), "bias", OpKind::Linear);
  const int64_t Ho = g.out_h(x.dim(1)), Wo = g.out_w(x.dim(2));
  MF_CHECK(Ho > 0 && Wo > 0, "depthwise_linear: input {} is too small", x.shape().str());
  Tensor y = out(e, {x.dim(0), Ho, Wo, w.dim(0)});
  // Profiled as GEMM work (its larger part); MACs of both halves.
  Timed t(e, OpKind::Linear, x.dim(0) * Ho * Wo * x.dim(3) * (g.kernel_h * g.kernel_w + w.dim(0)));
  e.backend->depthwise_linear(x, dw_w, dw_b, g, w, b, y);
  return y;
}

Tensor mlp(const Exec& e, const Tensor& x, const Tensor& w1, const Tensor* b1, const Activation& act, const Tensor& w2,
           const Tensor* b2) {
  MF_CHECK(x.ndim() >= 1, "mlp: input must have at least one dimension");
  const int64_t K = x.shape().last(), H = w1.dim(0), N = w2.dim(0);
  MF_CHECK(w1.dim(1) == K && w2.dim(1) == H, "mlp: weights {} and {} do not chain from {} features", w1.shape().str(),
           w2.shape().str(), K);
  check_vec(b1, H, "fc1 bias", OpKind::Linear);
  check_vec(b2, N, "fc2 bias", OpKind::Linear);
  Shape ys = x.shape();
  ys[-1] = N;
  Tensor y = out(e, ys);
  Timed t(e, OpKind::Linear, x.shape().rows() * H * (K + N));
  e.backend->mlp(x, w1, b1, act, w2, b2, y);
  return y;
}

Tensor conv2d(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g) {
  check_rank(x, 4, OpKind::Conv2d);
  MF_CHECK(w.ndim() == 4 && w.dim(1) == x.dim(3) && w.dim(2) == g.kernel_h && w.dim(3) == g.kernel_w,
           "conv2d: weight {} does not fit input {} with a {}x{} kernel", w.shape().str(), x.shape().str(), g.kernel_h,
           g.kernel_w);
  check_vec(b, w.dim(0), "bias", OpKind::Conv2d);
  const int64_t Ho = g.out_h(x.dim(1)), Wo = g.out_w(x.dim(2));
  MF_CHECK(Ho > 0 && Wo > 0, "conv2d: input {} is too small for a {}x{} kernel", x.shape().str(), g.kernel_h,
           g.kernel_w);
  Tensor y = out(e, {x.dim(0), Ho, Wo, w.dim(0)});
  Timed t(e, OpKind::Conv2d, x.dim(0) * Ho * Wo * w.dim(0) * x.dim(3) * g.kernel_h * g.kernel_w);
  e.backend->conv2d(x, w, b, g, y);
  return y;
}

namespace {
// Checks a depthwise convolution's arguments (`name` for the message: the plain op or the one with an
// input activation) and allocates its output [B, Ho, Wo, C].
// x: the input's shape (rank 4, checked by the caller).
Tensor depthwise_output(const Exec& e, const char* name, const Shape& x, const Tensor& w, const Tensor* b,
                        const ConvGeometry& g) {
  const int64_t C = x[3];
  MF_CHECK(w.ndim() == 4 && w.dim(0) == C && w.dim(1) == 1 && w.dim(2) == g.kernel_h && w.dim(3) == g.kernel_w,
           "{}: weight {} does not fit input {}", name, w.shape().str(), x.str());
  check_vec(b, C, "bias", OpKind::DepthwiseConv2d);
  const int64_t Ho = g.out_h(x[1]), Wo = g.out_w(x[2]);
  MF_CHECK(Ho > 0 && Wo > 0, "{}: input {} is too small", name, x.str());
  return out(e, {x[0], Ho, Wo, C});
}
Tensor depthwise_output(const Exec& e, const char* name, const Tensor& x, const Tensor& w, const Tensor* b,
                        const ConvGeometry& g) {
  check_rank(x, 4, OpKind::DepthwiseConv2d);
  return depthwise_output(e, name, x.shape(), w, b, g);
}
}  // namespace

Tensor depthwise_conv2d(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g) {
  Tensor y = depthwise_output(e, "depthwise_conv2d", x, w, b, g);
  Timed t(e, OpKind::DepthwiseConv2d, y.numel() * g.kernel_h * g.kernel_w);
  e.backend->depthwise_conv2d(x, w, b, g, y);
  return y;
}

Tensor act_depthwise_conv2d(const Exec& e, const Tensor& pre, const Activation& act, const Tensor& w, const Tensor* b,
                            const ConvGeometry& g) {
  if (act.kind == ActKind::Identity) return depthwise_conv2d(e, pre, w, b, g);
  Tensor y = depthwise_output(e, "act_depthwise_conv2d", pre, w, b, g);
  Timed t(e, OpKind::DepthwiseConv2d, y.numel() * g.kernel_h * g.kernel_w);
  e.backend->act_depthwise_conv2d(pre, act, w, b, g, y);
  return y;
}

Tensor depthwise_conv2d_slice(const Exec& e, const Tensor& t, int64_t offset, const Tensor& w, const Tensor* b,
                              const ConvGeometry& g) {
  check_rank(t, 4, OpKind::DepthwiseConv2d);
  const int64_t C = w.ndim() == 4 ? w.dim(0) : 0;
  MF_CHECK(offset >= 0 && C >= 1 && offset + C <= t.dim(3),
           "depthwise_conv2d_slice: channels [{}, {}) of input {}", offset, offset + C, t.shape().str());
  Tensor y = depthwise_output(e, "depthwise_conv2d_slice", Shape{t.dim(0), t.dim(1), t.dim(2), C}, w, b, g);
  Timed t_(e, OpKind::DepthwiseConv2d, y.numel() * g.kernel_h * g.kernel_w);
  e.backend->depthwise_conv2d_slice(t, offset, w, b, g, y);
  return y;
}

Tensor pool_minus_input(const Exec& e, const Tensor& x, int kernel) {
  check_rank(x, 4, OpKind::PoolMinusInput);
  MF_CHECK(kernel >= 1 && kernel % 2 == 1, "pool_minus_input: kernel must be odd, got {}", kernel);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::PoolMinusInput, 0);
  e.backend->pool_minus_input(x, kernel, y);
  return y;
}

Tensor pool_branch(const Exec& e, const Tensor& x, const BranchNorm& norm, int kernel, const BranchScales& scales) {
  MF_CHECK(x.ndim() == 4, "pool_branch: expected [B, H, W, C], got {}", x.shape().str());
  MF_CHECK(kernel >= 1 && kernel % 2 == 1, "pool_branch: kernel must be odd, got {}", kernel);
  MF_CHECK(norm.type == BranchNorm::Type::group_norm1, "pool_branch: the norm must be GroupNorm with one group");
  check_branch(x, norm, scales);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::PoolMinusInput, 0);
  e.backend->pool_branch(x, norm, kernel, scales, y);
  return y;
}

Tensor layer_norm(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, float eps) {
  check_vec(&w, x.shape().last(), "weight", OpKind::LayerNorm);
  check_vec(b, x.shape().last(), "bias", OpKind::LayerNorm);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::LayerNorm, 0);
  e.backend->layer_norm(x, w, b, eps, y);
  return y;
}

Tensor group_norm1(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, float eps) {
  MF_CHECK(x.ndim() >= 2, "group_norm1: input must have a batch dimension, got {}", x.shape().str());
  check_vec(&w, x.shape().last(), "weight", OpKind::GroupNorm1);
  check_vec(b, x.shape().last(), "bias", OpKind::GroupNorm1);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::GroupNorm1, 0);
  e.backend->group_norm1(x, w, b, eps, y);
  return y;
}

Tensor activation(const Exec& e, const Tensor& x, const Activation& act) {
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::Activation, 0);
  e.backend->activation(x, act, y);
  return y;
}

void activation_(const Exec& e, Tensor& x, const Activation& act) {
  if (act.kind == ActKind::Identity) return;
  Timed t(e, OpKind::Activation, 0);
  if (x.device() != e.backend->device() || x.dtype() != e.backend->activation_dtype()) {
    // in place across devices or dtypes: the result replaces x
    Tensor y = out(e, x.shape());
    e.backend->activation(x, act, y);
    x = y;
    return;
  }
  e.backend->activation(x, act, x);
}

Tensor scaled_residual(const Exec& e, const Tensor& x, const Tensor* res_scale, Tensor branch,
                       const Tensor* layer_scale) {
  MF_CHECK(x.shape() == branch.shape(), "scaled_residual: shapes {} and {} differ", x.shape().str(),
           branch.shape().str());
  check_vec(res_scale, x.shape().last(), "res_scale", OpKind::ScaledResidual);
  check_vec(layer_scale, x.shape().last(), "layer_scale", OpKind::ScaledResidual);
  Timed t(e, OpKind::ScaledResidual, 0);
  const bool in_place = branch.device() == e.backend->device() && branch.dtype() == e.backend->activation_dtype();
  Tensor y = in_place ? branch : out(e, branch.shape());
  e.backend->scaled_residual(x, res_scale, branch, layer_scale, y);
  return y;
}

Tensor scaled_residual_new(const Exec& e, const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                           const Tensor* layer_scale) {
  MF_CHECK(x.shape() == branch.shape(), "scaled_residual: shapes {} and {} differ", x.shape().str(),
           branch.shape().str());
  check_vec(res_scale, x.shape().last(), "res_scale", OpKind::ScaledResidual);
  check_vec(layer_scale, x.shape().last(), "layer_scale", OpKind::ScaledResidual);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::ScaledResidual, 0);
  e.backend->scaled_residual(x, res_scale, branch, layer_scale, y);
  return y;
}

Tensor global_avg_pool(const Exec& e, const Tensor& x) {
  check_rank(x, 4, OpKind::GlobalAvgPool);
  Tensor y = out(e, {x.dim(0), x.dim(3)});
  Timed t(e, OpKind::GlobalAvgPool, 0);
  e.backend->global_avg_pool(x, y);
  return y;
}

Tensor attention(const Exec& e, const Tensor& qkv, int heads, int head_dim, float scale, bool training,
                 Tensor* stats) {
  check_rank(qkv, 3, OpKind::Attention);
  const int64_t A = static_cast<int64_t>(heads) * head_dim;
  MF_CHECK(heads > 0 && head_dim > 0 && qkv.dim(2) == 3 * A,
           "attention: qkv has {} channels, expected 3 x {} heads x {}", qkv.dim(2), heads, head_dim);
  Tensor y = out(e, {qkv.dim(0), qkv.dim(1), A});
  const int64_t N = qkv.dim(1);
  Timed t(e, OpKind::Attention, 2 * qkv.dim(0) * N * N * A);
  if (training && stats)
    e.backend->attention_training_stats(qkv, heads, head_dim, scale, y, *stats);
  else if (training)
    e.backend->attention_training(qkv, heads, head_dim, scale, y);
  else
    e.backend->attention(qkv, heads, head_dim, scale, y);
  return y;
}

Tensor token_mix(const Exec& e, const Tensor& r, const Tensor& x, const Tensor* bias) {
  check_rank(x, 3, OpKind::TokenMix);
  MF_CHECK(r.ndim() == 2 && r.dim(1) == x.dim(1), "token_mix: a [{}, {}] token matrix cannot mix {} tokens",
           r.ndim() > 0 ? r.dim(0) : 0, r.ndim() > 1 ? r.dim(1) : 0, x.dim(1));
  check_vec(bias, r.dim(0), "bias", OpKind::TokenMix);
  Tensor y = out(e, {x.dim(0), r.dim(0), x.dim(2)});
  Timed t(e, OpKind::TokenMix, x.dim(0) * r.dim(0) * x.dim(1) * x.dim(2));
  e.backend->token_mix(r, x, bias, y);
  return y;
}

Tensor channel_slice(const Exec& e, const Tensor& x, int64_t offset, int64_t width) {
  MF_CHECK(x.ndim() >= 1 && offset >= 0 && width >= 1 && offset + width <= x.shape().last(),
           "channel_slice: channels [{}, {}) of shape {}", offset, offset + width, x.shape().str());
  Shape s = x.shape();
  s[-1] = width;
  Tensor y = out(e, s);
  Timed t(e, OpKind::ChannelSlice, 0);
  e.backend->channel_slice(x, offset, y);
  return y;
}

namespace {
void check_glu(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset, int64_t width) {
  const int64_t Ct = t.shape().last(), cw = c ? c->shape().last() : 0;
  MF_CHECK(t.ndim() >= 1 && width >= 1 && cw <= width && gate_offset >= 0 && gate_offset + width <= Ct &&
               value_offset >= 0 && value_offset + (width - cw) <= Ct,
           "glu: windows gate {}+{}, value {}+{} (+{} extra) do not fit {} channels", gate_offset, width, value_offset,
           width - cw, cw, Ct);
  if (c)
    MF_CHECK(c->shape().rows() == t.shape().rows(), "glu: extra value {} does not match {}", c->shape().str(),
             t.shape().str());
}
}  // namespace

Tensor glu(const Exec& e, const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset, int64_t width,
           const Activation& act) {
  check_glu(t, c, gate_offset, value_offset, width);
  Shape s = t.shape();
  s[-1] = width;
  Tensor y = out(e, s);
  Timed t_(e, OpKind::Glu, 0);
  e.backend->glu(t, c, gate_offset, value_offset, act, y);
  return y;
}

Tensor glu_linear(const Exec& e, const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                  int64_t width, const Activation& act, const Tensor& w, const Tensor* b) {
  check_glu(t, c, gate_offset, value_offset, width);
  MF_CHECK(w.dim(1) == width, "glu_linear: weight {} does not take {} features", w.shape().str(), width);
  check_vec(b, w.dim(0), "bias", OpKind::Linear);
  Shape s = t.shape();
  s[-1] = w.dim(0);
  Tensor y = out(e, s);
  Timed t_(e, OpKind::Linear, t.shape().rows() * width * w.dim(0));  // profiled as the GEMM it mostly is
  e.backend->glu_linear(t, c, gate_offset, value_offset, width, act, w, b, y);
  return y;
}

namespace {
Tensor spectral_forward(const Exec& e, const Tensor& x, float mid_scale) {
  check_rank(x, 4, OpKind::Rfft2);
  MF_CHECK(x.numel() > 0, "rfft2: empty input {}", x.shape().str());
  Tensor y = out(e, {x.dim(0), x.dim(1), x.dim(2) / 2 + 1, 2, x.dim(3)});
  const double n = static_cast<double>(x.dim(1) * x.dim(2));
  Timed t(e, OpKind::Rfft2, static_cast<int64_t>(x.dim(0) * x.dim(3) * n * std::log2(std::max(2.0, n))));
  e.backend->rfft2(x, mid_scale, y);
  return y;
}

Tensor spectral_inverse(const Exec& e, const Tensor& x, int64_t width, float mid_scale) {
  MF_CHECK(x.ndim() == 5 && x.dim(3) == 2 && width >= 1 && x.dim(2) == width / 2 + 1,
           "irfft2: a spectrum {} cannot give width {} (expected [B, H, width/2+1, 2, C])", x.shape().str(), width);
  Tensor y = out(e, {x.dim(0), x.dim(1), width, x.dim(4)});
  const double n = static_cast<double>(x.dim(1) * width);
  Timed t(e, OpKind::Irfft2, static_cast<int64_t>(x.dim(0) * x.dim(4) * n * std::log2(std::max(2.0, n))));
  e.backend->irfft2(x, mid_scale, y);
  return y;
}

void check_complex(const Tensor& a, const Tensor& b) {
  MF_CHECK(a.ndim() >= 2 && a.dim(-2) == 2, "complex_mul: {} is not in the split layout [..., 2, C]", a.shape().str());
  const bool same = b.shape() == a.shape();
  bool broadcast = b.ndim() == a.ndim() - 1;
  for (int i = 0; broadcast && i < b.ndim(); ++i) broadcast = b.dim(i) == a.dim(i + 1);
  MF_CHECK(same || broadcast, "complex_mul: {} cannot multiply {} (same shape, or without the batch)",
           b.shape().str(), a.shape().str());
}
}  // namespace

Tensor rfft2(const Exec& e, const Tensor& x) { return spectral_forward(e, x, 1.f); }
Tensor irfft2(const Exec& e, const Tensor& x, int64_t width) { return spectral_inverse(e, x, width, 1.f); }
Tensor rfft2_backward(const Exec& e, const Tensor& dy, int64_t width) { return spectral_inverse(e, dy, width, 0.5f); }
Tensor irfft2_backward(const Exec& e, const Tensor& dy) { return spectral_forward(e, dy, 2.f); }

Tensor complex_mul(const Exec& e, const Tensor& a, const Tensor& b) {
  check_complex(a, b);
  Tensor y = out(e, a.shape());
  Timed t(e, OpKind::ComplexMul, 0);
  e.backend->complex_mul(a, b, false, y);
  return y;
}

Tensor complex_mul_backward(const Exec& e, const Tensor& a, const Tensor& b, const Tensor& dy, Tensor* db) {
  check_complex(a, b);
  MF_CHECK(dy.shape() == a.shape(), "complex_mul backward: dy {} for {}", dy.shape().str(), a.shape().str());
  if (db) MF_CHECK(db->shape() == b.shape(), "complex_mul backward: db {} for {}", db->shape().str(), b.shape().str());
  Tensor da = out(e, a.shape());
  Timed t(e, OpKind::ComplexMul, 0);
  e.backend->complex_mul_backward(a, b, dy, &da, db);
  return da;
}

Tensor haar2d(const Exec& e, const Tensor& x) {
  check_rank(x, 4, OpKind::Haar2d);
  Tensor y = out(e, {x.dim(0), (x.dim(1) + 1) / 2, (x.dim(2) + 1) / 2, 4, x.dim(3)});
  Timed t(e, OpKind::Haar2d, 0);
  e.backend->haar2d(x, false, y);
  return y;
}

Tensor haar2d_inverse(const Exec& e, const Tensor& bands, int64_t height, int64_t width) {
  MF_CHECK(bands.ndim() == 5 && bands.dim(3) == 4 && bands.dim(1) == (height + 1) / 2 && bands.dim(2) == (width + 1) / 2,
           "haar2d inverse: bands {} cannot give {}x{}", bands.shape().str(), height, width);
  Tensor y = out(e, {bands.dim(0), height, width, bands.dim(4)});
  Timed t(e, OpKind::Haar2d, 0);
  e.backend->haar2d(bands, true, y);
  return y;
}

Tensor channel_affine(const Exec& e, const Tensor& x, const Tensor& alpha, const Tensor& beta) {
  check_vec(&alpha, x.shape().last(), "alpha", OpKind::ChannelAffine);
  check_vec(&beta, x.shape().last(), "beta", OpKind::ChannelAffine);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::ChannelAffine, 0);
  e.backend->channel_affine(x, alpha, beta, y);
  return y;
}

Tensor nchw_to_nhwc(const Exec& e, const Tensor& x) {
  check_rank(x, 4, OpKind::NchwToNhwc);
  Tensor y = out(e, {x.dim(0), x.dim(2), x.dim(3), x.dim(1)});
  Timed t(e, OpKind::NchwToNhwc, 0);
  e.backend->nchw_to_nhwc(x, y);
  return y;
}

std::vector<int> inverse_permutation(const std::vector<int>& perm) {
  std::vector<int> inv(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inv[static_cast<size_t>(perm[i])] = static_cast<int>(i);
  return inv;
}

Tensor permute(const Exec& e, const Tensor& x, const std::vector<int>& perm) {
  const int rank = x.ndim();
  MF_CHECK(rank >= 1 && rank <= Shape::kMaxDims && perm.size() == static_cast<size_t>(rank),
           "permute: {} axes given for a rank-{} tensor {}", perm.size(), rank, x.shape().str());
  std::vector<int64_t> dims(perm.size());
  std::vector<bool> seen(perm.size(), false);
  for (size_t i = 0; i < perm.size(); ++i) {
    MF_CHECK(perm[i] >= 0 && perm[i] < rank && !seen[static_cast<size_t>(perm[i])],
             "permute: the axes must be a permutation of 0..{}", rank - 1);
    seen[static_cast<size_t>(perm[i])] = true;
    dims[i] = x.dim(perm[i]);
  }
  Tensor y = out(e, Shape(dims));
  Timed t(e, OpKind::Permute, 0);
  e.backend->permute(x, perm, y);
  return y;
}

namespace {
void check_shift(const Tensor& x, int axis, int64_t group_width, const std::vector<int>& shifts) {
  check_rank(x, 4, OpKind::SpatialShift);
  MF_CHECK(axis == 1 || axis == 2, "spatial_shift: axis must be 1 (H) or 2 (W), not {}", axis);
  MF_CHECK(group_width >= 1, "spatial_shift: group width {} must be positive", group_width);
  const int64_t groups = (x.dim(3) + group_width - 1) / group_width;
  MF_CHECK(static_cast<int64_t>(shifts.size()) >= groups, "spatial_shift: {} channels in groups of {} need {} shifts, "
           "{} given", x.dim(3), group_width, groups, shifts.size());
}
}  // namespace

Tensor spatial_shift(const Exec& e, const Tensor& x, int axis, int64_t group_width, const std::vector<int>& shifts) {
  check_shift(x, axis, group_width, shifts);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::SpatialShift, 0);
  e.backend->spatial_shift(x, axis, group_width, shifts, y);
  return y;
}

Tensor spatial_shift_backward(const Exec& e, const Tensor& dy, int axis, int64_t group_width,
                              const std::vector<int>& shifts) {
  std::vector<int> back(shifts.size());
  for (size_t i = 0; i < shifts.size(); ++i) back[i] = -shifts[i];
  return spatial_shift(e, dy, axis, group_width, back);
}

Tensor resize_bicubic(const Exec& e, const Tensor& x, int64_t height, int64_t width) {
  check_rank(x, 4, OpKind::ResizeBicubic);
  MF_CHECK(height >= 1 && width >= 1 && height <= 65536 && width <= 65536, "resize_bicubic: size {}x{} is out of range",
           height, width);
  Tensor y = out(e, {x.dim(0), height, width, x.dim(3)});
  Timed t(e, OpKind::ResizeBicubic, 0);
  e.backend->resize_bicubic(x, false, y);
  return y;
}

Tensor resize_bicubic_backward(const Exec& e, const Tensor& dy, int64_t height, int64_t width) {
  check_rank(dy, 4, OpKind::ResizeBicubic);
  MF_CHECK(height >= 1 && width >= 1 && height <= 65536 && width <= 65536, "resize_bicubic: size {}x{} is out of range",
           height, width);
  Tensor dx = out(e, {dy.dim(0), height, width, dy.dim(3)});
  Timed t(e, OpKind::ResizeBicubic, 0);
  e.backend->resize_bicubic(dy, true, dx);
  return dx;
}

Tensor sample_scale(const Exec& e, const Tensor& x, const Tensor& s) {
  MF_CHECK(x.ndim() >= 1 && s.numel() == x.dim(0), "sample_scale: {} scales for a batch of {}", s.numel(),
           x.ndim() ? x.dim(0) : 0);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::SampleScale, 0);
  e.backend->sample_scale(x, s, y);
  return y;
}

Tensor augment_crops(const Exec& e, const Tensor& rows, const Tensor& headers, const Tensor& table, bool keep_fp32) {
  check_rank(rows, 4, OpKind::AugmentCrops);
  MF_CHECK(rows.dim(1) == rows.dim(2) && rows.dim(3) == 3, "augment_crops: rows {} are not [B, S, S, 3]",
           rows.shape().str());
  MF_CHECK(headers.device() == Device::CPU && headers.shape() == Shape({rows.dim(0), crops::kHeaderInts}),
           "augment_crops: headers {} for {} rows (host, [B, {}])", headers.shape().str(), rows.dim(0),
           crops::kHeaderInts);
  MF_CHECK(table.numel() == 3 * 256, "augment_crops: a table of {} values, not 3 x 256", table.numel());
  Tensor y = keep_fp32 ? Tensor::empty(rows.shape(), e.backend->device()) : out(e, rows.shape());
  Timed t(e, OpKind::AugmentCrops, 0);
  e.backend->augment_crops(rows, headers, table, y);
  return y;
}

Tensor mix_images(const Exec& e, const Tensor& images, const MixPlan& plan) {
  check_rank(images, 4, OpKind::MixImages);
  MF_CHECK(images.dtype() == DType::f32, "mix_images: the images are {}, not fp32", dtype_name(images.dtype()));
  const int64_t H = images.dim(1), W = images.dim(2);
  MF_CHECK(plan.mode != MixPlan::Mode::box ||
               (0 <= plan.y0 && plan.y0 <= plan.y1 && plan.y1 <= H && 0 <= plan.x0 && plan.x0 <= plan.x1 && plan.x1 <= W),
           "mix_images: the box [{}, {}) x [{}, {}) is outside {} x {} images", plan.y0, plan.y1, plan.x0, plan.x1, H, W);
  Tensor y = out(e, images.shape());
  Timed t(e, OpKind::MixImages, 0);
  e.backend->mix_images(images, plan, y);
  return y;
}

Tensor cross_entropy_losses(const Exec& e, const Tensor& logits, const Tensor& target, Tensor& dlogits) {
  check_rank(logits, 2, OpKind::CrossEntropy);
  MF_CHECK(target.shape() == logits.shape(), "cross_entropy: targets {} for logits {}", target.shape().str(),
           logits.shape().str());
  const int64_t B = logits.dim(0);
  MF_CHECK(B > 0, "cross_entropy: empty batch");
  // The losses are fp32 whatever the activations' dtype (bf16 on a bf16 GPU backend); dlogits is an
  // activation gradient.
  Tensor loss = Tensor::empty({B}, e.backend->device());
  dlogits = out(e, logits.shape());
  Timed t(e, OpKind::CrossEntropy, 0);
  e.backend->cross_entropy(logits, target, 1.f / static_cast<float>(B), loss, dlogits);
  return loss;
}

double mean_loss(const Tensor& host_losses) {
  MF_CHECK(host_losses.device() == Device::CPU && host_losses.numel() > 0, "mean_loss: {} losses on {}",
           host_losses.numel(), device_name(host_losses.device()));
  double sum = 0;
  for (float v : host_losses.span()) sum += v;
  return sum / static_cast<double>(host_losses.numel());
}

double cross_entropy(const Exec& e, const Tensor& logits, const Tensor& target, Tensor& dlogits) {
  return mean_loss(cross_entropy_losses(e, logits, target, dlogits).to(Device::CPU));  // a GPU's losses come back first
}

// ---- backward ------------------------------------------------------------------------------------


namespace {
// Checks strip_mix's arguments; returns L, the length of the mixed axis.
int64_t check_strip(const Tensor& x, const Tensor& w, const Tensor* b, int axis) {
  check_rank(x, 4, OpKind::StripMix);
  MF_CHECK(axis == 1 || axis == 2, "strip_mix: axis must be 1 (H) or 2 (W), not {}", axis);
  const int64_t L = x.dim(axis);
  MF_CHECK(w.ndim() == 4 && w.dim(1) == L && w.dim(2) == 1 && w.dim(3) == 3 && w.dim(0) % L == 0,
           "strip_mix: weight {} does not fit an input {} mixed along axis {} (expected [G·{}, {}, 1, 3])",
           w.shape().str(), x.shape().str(), axis, L, L);
  const int64_t groups = w.dim(0) / L;
  MF_CHECK(groups >= 1 && x.dim(3) % groups == 0, "strip_mix: {} channels do not split into {} groups", x.dim(3),
           groups);
  check_vec(b, w.dim(0), "bias", OpKind::StripMix);
  return L;
}
}  // namespace

Tensor strip_mix(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, int axis) {
  const int64_t L = check_strip(x, w, b, axis);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::StripMix, x.numel() * L * 3);
  e.backend->strip_mix(x, w, b, axis, y);
  return y;
}

Tensor strip_mix_backward(const Exec& e, const Tensor& x, const Tensor& w, int axis, const Tensor& dy, bool need_dx,
                          Tensor* dw, Tensor* db) {
  const int64_t L = check_strip(x, w, nullptr, axis);
  MF_CHECK(dy.shape() == x.shape(), "strip_mix backward: dy {} for x {}", dy.shape().str(), x.shape().str());
  check_grad(dw, w, "weight", OpKind::StripMix);
  check_vec(db, w.dim(0), "bias gradient", OpKind::StripMix);
  Tensor dx = need_dx ? out(e, x.shape()) : Tensor();
  Timed t(e, OpKind::StripMix, 2 * x.numel() * L * 3);
  e.backend->strip_mix_backward(x, w, axis, dy, need_dx ? &dx : nullptr, dw, db);
  return dx;
}

namespace {
void check_split_attention(const std::vector<Tensor>& branches, const Tensor& logits) {
  MF_CHECK(!branches.empty() && branches.size() <= 16, "split_attention: {} branches (1 to 16)", branches.size());
  const Shape& s = branches[0].shape();
  MF_CHECK(s.ndim() >= 2, "split_attention: a branch must have a batch and a channel dimension, got {}", s.str());
  for (const Tensor& t : branches)
    MF_CHECK(t.shape() == s, "split_attention: branches {} and {} differ", s.str(), t.shape().str());
  const auto K = static_cast<int64_t>(branches.size());
  MF_CHECK(logits.ndim() == 2 && logits.dim(0) == s[0] && logits.dim(1) == s.last() * K,
           "split_attention: logits {} for {} branches of {} (expected [{}, {}])", logits.shape().str(), K, s.str(),
           s[0], s.last() * K);
}
}  // namespace

Tensor split_attention(const Exec& e, const std::vector<Tensor>& branches, const Tensor& logits) {
  check_split_attention(branches, logits);
  Tensor y = out(e, branches[0].shape());
  Timed t(e, OpKind::SplitAttention, 0);
  e.backend->split_attention(branches, logits, y);
  return y;
}

std::vector<Tensor> split_attention_backward(const Exec& e, const std::vector<Tensor>& branches, const Tensor& logits,
                                             const Tensor& dy, Tensor& dlogits) {
  check_split_attention(branches, logits);
  MF_CHECK(dy.shape() == branches[0].shape(), "split_attention backward: dy {} for branches {}", dy.shape().str(),
           branches[0].shape().str());
  std::vector<Tensor> d;
  for (size_t k = 0; k < branches.size(); ++k) d.push_back(out(e, dy.shape()));
  dlogits = out(e, logits.shape());
  Timed t(e, OpKind::SplitAttention, 0);
  e.backend->split_attention_backward(branches, logits, dy, d, dlogits);
  return d;
}

Tensor grn(const Exec& e, const Tensor& x, const Tensor& gamma, const Tensor& beta) {
  check_rank(x, 4, OpKind::Grn);
  check_vec(&gamma, x.dim(3), "gamma", OpKind::Grn);
  check_vec(&beta, x.dim(3), "beta", OpKind::Grn);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::Grn, 0);
  e.backend->grn(x, gamma, beta, y);
  return y;
}

Tensor grn_backward(const Exec& e, const Tensor& x, const Tensor& gamma, const Tensor& dy, Tensor* dgamma,
                    Tensor* dbeta) {
  check_rank(x, 4, OpKind::Grn);
  check_vec(&gamma, x.dim(3), "gamma", OpKind::Grn);
  MF_CHECK(dy.shape() == x.shape(), "grn backward: dy {} for x {}", dy.shape().str(), x.shape().str());
  check_vec(dgamma, x.dim(3), "gamma gradient", OpKind::Grn);
  check_vec(dbeta, x.dim(3), "beta gradient", OpKind::Grn);
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::Grn, 0);
  e.backend->grn_backward(x, gamma, dy, dx, dgamma, dbeta);
  return dx;
}

namespace {
void check_gate(const Tensor& x, const Tensor& g) {
  MF_CHECK(x.ndim() >= 2, "gate: input must have a batch and a channel dimension, got {}", x.shape().str());
  const bool full = g.shape() == x.shape();
  Shape per_position = x.shape();
  per_position[-1] = 1;
  const bool position = g.shape() == per_position;
  const bool channel = g.ndim() == 2 && g.dim(0) == x.dim(0) && g.dim(1) == x.shape().last();
  MF_CHECK(full || position || channel, "gate: a gate {} fits neither {} itself, one value per position ({}) nor "
           "one per sample and channel ([{}, {}])", g.shape().str(), x.shape().str(), per_position.str(), x.dim(0),
           x.shape().last());
}
}  // namespace

Tensor gate(const Exec& e, const Tensor& x, const Tensor& g, bool sigmoid) {
  check_gate(x, g);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::Gate, 0);
  e.backend->gate(x, g, sigmoid, y);
  return y;
}

std::pair<Tensor, Tensor> gate_backward(const Exec& e, const Tensor& x, const Tensor& g, bool sigmoid, const Tensor& dy) {
  check_gate(x, g);
  MF_CHECK(dy.shape() == x.shape(), "gate backward: dy {} for x {}", dy.shape().str(), x.shape().str());
  Tensor dx = out(e, x.shape()), dg = out(e, g.shape());
  Timed t(e, OpKind::Gate, 0);
  e.backend->gate_backward(x, g, sigmoid, dy, dx, dg);
  return {dx, dg};
}

Tensor linear_backward(const Exec& e, const Tensor& x, const Tensor& w, const Tensor& dy, bool need_dx, Tensor* dw,
                       Tensor* db) {
  const int64_t N = w.dim(0), K = w.dim(1);
  MF_CHECK(x.shape().last() == K && dy.shape().last() == N && dy.shape().rows() == x.shape().rows(),
           "linear backward: x {}, w {}, dy {} do not fit", x.shape().str(), w.shape().str(), dy.shape().str());
  check_grad(dw, w, "weight", OpKind::Linear);
  check_vec(db, N, "bias gradient", OpKind::Linear);
  Tensor dx = need_dx ? out(e, x.shape()) : Tensor();
  Timed t(e, OpKind::Linear, x.shape().rows() * K * N * ((need_dx ? 1 : 0) + (dw ? 1 : 0)));
  e.backend->linear_backward(x, w, dy, need_dx ? &dx : nullptr, dw, db);
  return dx;
}

namespace {
// The arguments of a linear's backward through the activation in front of it (linear_act_backward and
// linear_act_scaled_backward; `what` names the op in the message).
void check_linear_act_backward(const char* what, const Tensor& h, const Tensor& pre, const Tensor& w, const Tensor& dy,
                               const Tensor* dw, const Tensor* db, const Tensor* dscale, const Tensor* dbias) {
  const int64_t N = w.dim(0), K = w.dim(1);
  MF_CHECK(h.shape() == pre.shape() && h.shape().last() == K && dy.shape().last() == N &&
               dy.shape().rows() == h.shape().rows(),
           "{} backward: h {}, pre {}, w {}, dy {} do not fit", what, h.shape().str(), pre.shape().str(),
           w.shape().str(), dy.shape().str());
  check_grad(dw, w, "weight", OpKind::Linear);
  check_vec(db, N, "bias gradient", OpKind::Linear);
  if (dscale) check_vec(dscale, 1, "scale gradient", OpKind::Activation);
  if (dbias) check_vec(dbias, 1, "bias gradient", OpKind::Activation);
}
}  // namespace

Tensor linear_act_backward(const Exec& e, const Tensor& h, const Tensor& pre, const Activation& act, const Tensor& w,
                           const Tensor& dy, Tensor* dw, Tensor* db, Tensor* dscale, Tensor* dbias) {
  if (act.kind == ActKind::Identity) return linear_backward(e, h, w, dy, true, dw, db);
  const int64_t N = w.dim(0), K = w.dim(1);
  check_linear_act_backward("linear_act", h, pre, w, dy, dw, db, dscale, dbias);
  Tensor dpre = out(e, pre.shape());
  Timed t(e, OpKind::Linear, h.shape().rows() * K * N * (dw ? 2 : 1));
  e.backend->linear_act_backward(h, pre, act, w, dy, dpre, dw, db, dscale, dbias);
  return dpre;
}

Tensor linear_act_scaled_backward(const Exec& e, const Tensor& h, const Tensor& pre, const Activation& act,
                                  const Tensor& w, const Tensor* b, const Tensor& ls, const Tensor& dy, Tensor* dw,
                                  Tensor* db, Tensor* dls, Tensor* dscale, Tensor* dbias) {
  const int64_t N = w.dim(0), K = w.dim(1);
  check_linear_act_backward("linear_scaled_residual", h, pre, w, dy, dw, db, dscale, dbias);
  check_vec(b, N, "bias", OpKind::Linear);
  check_vec(&ls, N, "layer_scale", OpKind::Linear);
  check_vec(dls, N, "layer_scale gradient", OpKind::Linear);
  MF_CHECK(b != nullptr || db == nullptr, "linear_scaled_residual backward: a bias gradient without a bias");
  Tensor dpre = out(e, pre.shape());
  Timed t(e, OpKind::Linear, h.shape().rows() * K * N * (dw ? 2 : 1));
  e.backend->linear_act_scaled_backward(h, pre, act, w, b, ls, dy, dpre, dw, db, dls, dscale, dbias);
  return dpre;
}

Tensor pool_branch_backward(const Exec& e, const Tensor& x, const BranchNorm& norm, int kernel, const Tensor& ls,
                            const Tensor& dy, Tensor* dw, Tensor* db, Tensor* dls) {
  MF_CHECK(x.ndim() == 4 && dy.shape() == x.shape(), "pool_branch backward: dy {} for x {}", dy.shape().str(),
           x.shape().str());
  MF_CHECK(kernel >= 1 && kernel % 2 == 1, "pool_branch backward: kernel must be odd, got {}", kernel);
  MF_CHECK(norm.type == BranchNorm::Type::group_norm1 && norm.weight != nullptr,
           "pool_branch backward: the norm must be GroupNorm with one group");
  const int64_t C = x.dim(3);
  check_vec(norm.weight, C, "norm weight", OpKind::PoolMinusInput);
  check_vec(norm.bias, C, "norm bias", OpKind::PoolMinusInput);
  check_vec(&ls, C, "layer_scale", OpKind::PoolMinusInput);
  check_vec(dw, C, "norm weight gradient", OpKind::PoolMinusInput);
  check_vec(db, C, "norm bias gradient", OpKind::PoolMinusInput);
  check_vec(dls, C, "layer_scale gradient", OpKind::PoolMinusInput);
  MF_CHECK(norm.bias != nullptr || db == nullptr, "pool_branch backward: a bias gradient without a bias");
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::PoolMinusInput, 0);
  e.backend->pool_branch_backward(x, norm, kernel, ls, dy, dx, dw, db, dls);
  return dx;
}

Tensor conv2d_backward(const Exec& e, const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                       bool need_dx, Tensor* dw, Tensor* db) {
  MF_CHECK(dy.ndim() == 4 && dy.dim(1) == g.out_h(x.dim(1)) && dy.dim(2) == g.out_w(x.dim(2)) && dy.dim(3) == w.dim(0),
           "conv2d backward: dy {} does not fit x {}", dy.shape().str(), x.shape().str());
  check_grad(dw, w, "weight", OpKind::Conv2d);
  check_vec(db, w.dim(0), "bias gradient", OpKind::Conv2d);
  Tensor dx = need_dx ? out(e, x.shape()) : Tensor();
  const int64_t macs = dy.numel() * x.dim(3) * g.kernel_h * g.kernel_w;
  Timed t(e, OpKind::Conv2d, macs * ((need_dx ? 1 : 0) + (dw ? 1 : 0)));
  e.backend->conv2d_backward(x, w, g, dy, need_dx ? &dx : nullptr, dw, db);
  return dx;
}

namespace {
// Checks a depthwise convolution's backward arguments against its forward input x (`name` for the
// message).
void check_depthwise_backward(const char* name, const Tensor& x, const Tensor& w, const ConvGeometry& g,
                              const Tensor& dy, const Tensor* dw, const Tensor* db) {
  MF_CHECK(x.ndim() == 4 && dy.ndim() == 4 && dy.dim(0) == x.dim(0) && dy.dim(1) == g.out_h(x.dim(1)) &&
               dy.dim(2) == g.out_w(x.dim(2)) && dy.dim(3) == x.dim(3),
           "{} backward: dy {} does not fit its input {}", name, dy.shape().str(), x.shape().str());
  check_grad(dw, w, "weight", OpKind::DepthwiseConv2d);
  check_vec(db, x.dim(3), "bias gradient", OpKind::DepthwiseConv2d);
}
}  // namespace

Tensor depthwise_conv2d_backward(const Exec& e, const Tensor& x, const Tensor& w, const ConvGeometry& g,
                                 const Tensor& dy, Tensor* dw, Tensor* db) {
  check_depthwise_backward("depthwise_conv2d", x, w, g, dy, dw, db);
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::DepthwiseConv2d, 2 * dy.numel() * g.kernel_h * g.kernel_w);
  e.backend->depthwise_conv2d_backward(x, w, g, dy, &dx, dw, db);
  return dx;
}

Tensor gated_conv_backward(const Exec& e, const Tensor& t, const Tensor& c, int64_t hidden, int64_t offset,
                           const Activation& act, const Tensor& w, const ConvGeometry& g, const Tensor& dz, Tensor* dw,
                           Tensor* db) {
  check_rank(t, 4, OpKind::Glu);
  const int64_t C = c.shape().last();
  MF_CHECK(c.ndim() == 4 && c.dim(0) == t.dim(0) && c.dim(1) == t.dim(1) && c.dim(2) == t.dim(2) && C <= hidden &&
               offset + C == t.dim(3) && t.dim(3) == 2 * hidden && g.out_h(t.dim(1)) == t.dim(1) &&
               g.out_w(t.dim(2)) == t.dim(2),
           "gated_conv backward: c {} (at channel {}) and hidden {} do not fit t {} with a size-preserving convolution",
           c.shape().str(), offset, hidden, t.shape().str());
  check_glu(t, &c, 0, hidden, hidden);
  MF_CHECK(dz.shape().rows() == t.shape().rows() && dz.shape().last() == hidden, "gated_conv backward: dz {} for t {}",
           dz.shape().str(), t.shape().str());
  MF_CHECK(w.ndim() == 4 && w.dim(0) == C && w.dim(1) == 1 && w.dim(2) == g.kernel_h && w.dim(3) == g.kernel_w,
           "gated_conv backward: weight {} does not fit {} channels", w.shape().str(), C);
  check_grad(dw, w, "weight", OpKind::DepthwiseConv2d);
  check_vec(db, C, "bias gradient", OpKind::DepthwiseConv2d);
  Tensor dt = out(e, t.shape());
  Timed t_(e, OpKind::DepthwiseConv2d, 2 * c.numel() * g.kernel_h * g.kernel_w);
  e.backend->gated_conv_backward(t, c, hidden, offset, act, w, g, dz, dt, dw, db);
  return dt;
}

Tensor act_depthwise_conv2d_backward(const Exec& e, const Tensor& pre, const Activation& act, const Tensor& w,
                                     const ConvGeometry& g, const Tensor& dy, Tensor* dw, Tensor* db, Tensor* dscale,
                                     Tensor* dbias) {
  if (act.kind == ActKind::Identity) return depthwise_conv2d_backward(e, pre, w, g, dy, dw, db);
  check_depthwise_backward("act_depthwise_conv2d", pre, w, g, dy, dw, db);
  if (dscale) check_vec(dscale, 1, "scale gradient", OpKind::Activation);
  if (dbias) check_vec(dbias, 1, "bias gradient", OpKind::Activation);
  Tensor dpre = out(e, pre.shape());
  Timed t(e, OpKind::DepthwiseConv2d, 2 * dy.numel() * g.kernel_h * g.kernel_w);
  e.backend->act_depthwise_conv2d_backward(pre, act, w, g, dy, dpre, dw, db, dscale, dbias);
  return dpre;
}

Tensor pool_minus_input_backward(const Exec& e, const Tensor& dy, int kernel) {
  check_rank(dy, 4, OpKind::PoolMinusInput);
  Tensor dx = out(e, dy.shape());
  Timed t(e, OpKind::PoolMinusInput, 0);
  e.backend->pool_minus_input_backward(dy, kernel, dx);
  return dx;
}

Tensor layer_norm_backward(const Exec& e, const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor* dw,
                           Tensor* db, const Tensor* residual, const Tensor* res_scale, Tensor* d_res_scale) {
  MF_CHECK(dy.shape() == x.shape(), "layer_norm backward: dy {} for x {}", dy.shape().str(), x.shape().str());
  MF_CHECK(!residual || residual->shape() == x.shape(), "layer_norm backward: residual gradient {} for x {}",
           residual ? residual->shape().str() : "", x.shape().str());
  MF_CHECK(residual || (!res_scale && !d_res_scale), "layer_norm backward: a res scale without a residual gradient");
  check_grad(dw, w, "weight", OpKind::LayerNorm);
  check_grad(db, w, "bias", OpKind::LayerNorm);
  check_vec(res_scale, x.shape().last(), "res_scale", OpKind::LayerNorm);
  check_vec(d_res_scale, x.shape().last(), "res_scale gradient", OpKind::LayerNorm);
  MF_CHECK(!d_res_scale || res_scale, "layer_norm backward: a res scale gradient without the res scale");
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::LayerNorm, 0);
  if (residual)
    e.backend->layer_norm_backward_add(x, w, eps, dy, *residual, res_scale, dx, dw, db, d_res_scale);
  else
    e.backend->layer_norm_backward(x, w, eps, dy, dx, dw, db);
  return dx;
}

Tensor group_norm1_backward(const Exec& e, const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor* dw,
                            Tensor* db, const Tensor* residual, const Tensor* res_scale, Tensor* d_res_scale) {
  MF_CHECK(dy.shape() == x.shape(), "group_norm1 backward: dy {} for x {}", dy.shape().str(), x.shape().str());
  MF_CHECK(!residual || residual->shape() == x.shape(), "group_norm1 backward: residual gradient {} for x {}",
           residual ? residual->shape().str() : "", x.shape().str());
  MF_CHECK(residual || (!res_scale && !d_res_scale), "group_norm1 backward: a res scale without a residual gradient");
  check_grad(dw, w, "weight", OpKind::GroupNorm1);
  check_grad(db, w, "bias", OpKind::GroupNorm1);
  check_vec(res_scale, x.shape().last(), "res_scale", OpKind::GroupNorm1);
  check_vec(d_res_scale, x.shape().last(), "res_scale gradient", OpKind::GroupNorm1);
  MF_CHECK(!d_res_scale || res_scale, "group_norm1 backward: a res scale gradient without the res scale");
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::GroupNorm1, 0);
  if (residual)
    e.backend->group_norm1_backward_add(x, w, eps, dy, *residual, res_scale, dx, dw, db, d_res_scale);
  else
    e.backend->group_norm1_backward(x, w, eps, dy, dx, dw, db);
  return dx;
}

Tensor activation_backward(const Exec& e, const Tensor& x, const Activation& act, const Tensor& dy, Tensor* dscale,
                           Tensor* dbias) {
  MF_CHECK(dy.shape() == x.shape(), "activation backward: dy {} for x {}", dy.shape().str(), x.shape().str());
  if (dscale) check_vec(dscale, 1, "scale gradient", OpKind::Activation);
  if (dbias) check_vec(dbias, 1, "bias gradient", OpKind::Activation);
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::Activation, 0);
  e.backend->activation_backward(x, act, dy, dx, dscale, dbias);
  return dx;
}

std::pair<Tensor, Tensor> scaled_residual_backward(const Exec& e, const Tensor& x, const Tensor* res_scale,
                                                   const Tensor& branch, const Tensor* layer_scale, const Tensor& dy,
                                                   Tensor* d_res_scale, Tensor* d_layer_scale, bool need_dx) {
  MF_CHECK(dy.shape() == x.shape() && (!branch.defined() || branch.shape() == x.shape()),
           "scaled_residual backward: shapes differ");
  MF_CHECK(branch.defined() || d_layer_scale == nullptr, "scaled_residual backward: the layer scale's gradient needs "
           "the branch output");
  check_vec(d_res_scale, x.shape().last(), "res_scale gradient", OpKind::ScaledResidual);
  check_vec(d_layer_scale, x.shape().last(), "layer_scale gradient", OpKind::ScaledResidual);
  Tensor dx = need_dx ? out(e, x.shape()) : Tensor(), dbranch = out(e, x.shape());
  Timed t(e, OpKind::ScaledResidual, 0);
  e.backend->scaled_residual_backward(x, res_scale, branch, layer_scale, dy, dx, dbranch, d_res_scale, d_layer_scale);
  return {dx, dbranch};
}

Tensor global_avg_pool_backward(const Exec& e, const Tensor& dy, const Shape& x_shape) {
  MF_CHECK(x_shape.ndim() == 4 && dy.ndim() == 2 && dy.dim(0) == x_shape[0] && dy.dim(1) == x_shape[3],
           "global_avg_pool backward: dy {} for input {}", dy.shape().str(), x_shape.str());
  Tensor dx = out(e, x_shape);
  Timed t(e, OpKind::GlobalAvgPool, 0);
  e.backend->global_avg_pool_backward(dy, dx);
  return dx;
}

Tensor attention_backward(const Exec& e, const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                          const Tensor* y, const Tensor* stats) {
  const int64_t A = static_cast<int64_t>(heads) * head_dim;
  MF_CHECK(qkv.ndim() == 3 && qkv.dim(2) == 3 * A && dy.ndim() == 3 && dy.dim(0) == qkv.dim(0) &&
               dy.dim(1) == qkv.dim(1) && dy.dim(2) == A,
           "attention backward: dy {} for qkv {}", dy.shape().str(), qkv.shape().str());
  Tensor dqkv = out(e, qkv.shape());
  const int64_t N = qkv.dim(1);
  Timed t(e, OpKind::Attention, 5 * qkv.dim(0) * N * N * A);
  if (y && stats && y->defined() && stats->defined()) {
    MF_CHECK(y->shape() == dy.shape() && stats->shape() == Shape({qkv.dim(0), heads, N}),
             "attention backward: the forward's output {} and statistics {} for dy {}", y->shape().str(),
             stats->shape().str(), dy.shape().str());
    e.backend->attention_backward_stats(qkv, heads, head_dim, scale, dy, *y, *stats, dqkv);
  } else {
    e.backend->attention_backward(qkv, heads, head_dim, scale, dy, dqkv);
  }
  return dqkv;
}

Tensor token_mix_backward(const Exec& e, const Tensor& r, const Tensor& x, const Tensor& dy, Tensor* dr,
                          Tensor* dbias) {
  MF_CHECK(dy.ndim() == 3 && dy.dim(0) == x.dim(0) && dy.dim(1) == r.dim(0) && dy.dim(2) == x.dim(2),
           "token_mix backward: dy {} for x {} and matrix {}", dy.shape().str(), x.shape().str(), r.shape().str());
  check_grad(dr, r, "matrix", OpKind::TokenMix);
  check_vec(dbias, r.dim(0), "bias gradient", OpKind::TokenMix);
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::TokenMix, x.dim(0) * r.dim(0) * x.dim(1) * x.dim(2) * (dr ? 2 : 1));
  e.backend->token_mix_backward(r, x, dy, &dx, dr, dbias);
  return dx;
}

void channel_slice_backward_(const Exec& e, const Tensor& dy, int64_t offset, Tensor& dx) {
  MF_CHECK(dy.shape().rows() == dx.shape().rows() && offset >= 0 && offset + dy.shape().last() <= dx.shape().last(),
           "channel_slice backward: dy {} at channel {} of dx {}", dy.shape().str(), offset, dx.shape().str());
  Timed t(e, OpKind::ChannelSlice, 0);
  e.backend->channel_slice_backward(dy, offset, dx);
}

Tensor zeros(const Exec& e, const Shape& s) {
  Tensor z = out(e, s);
  z.zero();
  return z;
}

Tensor concat_channels(const Exec& e, const Tensor& a, const Tensor& b) {
  MF_CHECK(a.shape().rows() == b.shape().rows(), "concatenating channels: {} and {}", a.shape().str(), b.shape().str());
  Shape s = a.shape();
  s[-1] = a.shape().last() + b.shape().last();
  Tensor both = zeros(e, s);
  channel_slice_backward_(e, a, 0, both);
  channel_slice_backward_(e, b, a.shape().last(), both);
  return both;
}

Tensor glu_backward(const Exec& e, const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                    const Activation& act, const Tensor& dy, Tensor* dc) {
  check_glu(t, c, gate_offset, value_offset, dy.shape().last());
  MF_CHECK(dy.shape().rows() == t.shape().rows(), "glu backward: dy {} for t {}", dy.shape().str(), t.shape().str());
  if (dc) MF_CHECK(c && dc->shape() == c->shape(), "glu backward: dc must match the extra value");
  Tensor dt = out(e, t.shape());
  Timed t_(e, OpKind::Glu, 0);
  e.backend->glu_backward(t, c, gate_offset, value_offset, act, dy, dt, dc);
  return dt;
}

Tensor channel_affine_backward(const Exec& e, const Tensor& x, const Tensor& alpha, const Tensor& dy, Tensor* dalpha,
                               Tensor* dbeta) {
  MF_CHECK(dy.shape() == x.shape(), "channel_affine backward: dy {} for x {}", dy.shape().str(), x.shape().str());
  check_vec(dalpha, x.shape().last(), "alpha gradient", OpKind::ChannelAffine);
  check_vec(dbeta, x.shape().last(), "beta gradient", OpKind::ChannelAffine);
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::ChannelAffine, 0);
  e.backend->channel_affine_backward(x, alpha, dy, dx, dalpha, dbeta);
  return dx;
}

}  // namespace op
}  // namespace mf
