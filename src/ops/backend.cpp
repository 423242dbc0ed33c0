#include "ops/backend.h"

#include "core/error.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/ref/ref_backend.h"
#ifdef MF_HAVE_CUDA
#include "ops/cuda/cuda_backend.h"
#endif

namespace mf {

void Backend::unsupported(OpKind op) const {
  fail("op {} is not supported on backend {}", op_name(op), name());
}

void Backend::linear(const Tensor&, const Tensor&, const Tensor*, Tensor&) { unsupported(OpKind::Linear); }
void Backend::branch_norm(const Tensor& x, const BranchNorm& norm, Tensor& n) {
  if (norm.type == BranchNorm::Type::layer_norm)
    layer_norm(x, *norm.weight, norm.bias, norm.eps, n);
  else
    group_norm1(x, *norm.weight, norm.bias, norm.eps, n);
}
void Backend::mlp_branch(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                         const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales,
                         Tensor& y) {
  // fc1 and fc2 one after the other (not mlp()), so that the norm's output is released before fc2
  // runs and the hidden activation before the residual: the 4x-wide hidden tensor is the largest
  // of a pass, and on a GPU the peak memory is what lives beside it.
  Tensor m;
  {
    Shape hs = x.shape();
    hs[-1] = w1.dim(0);
    Tensor h = Tensor::empty(hs, device(), activation_dtype());
    {
      Tensor n = Tensor::empty(x.shape(), device(), activation_dtype());
      branch_norm(x, norm, n);
      linear_act(n, w1, b1, act, h);
    }
    m = Tensor::empty(y.shape(), device(), activation_dtype());
    linear(h, w2, b2, m);
  }
  scaled_residual(x, scales.res_scale, m, scales.layer_scale, y);
}
void Backend::pool_branch(const Tensor& x, const BranchNorm& norm, int kernel, const BranchScales& scales,
                          Tensor& y) {
  Tensor n = Tensor::empty(x.shape(), device(), activation_dtype());
  group_norm1(x, *norm.weight, norm.bias, norm.eps, n);
  Tensor m = Tensor::empty(x.shape(), device(), activation_dtype());
  pool_minus_input(n, kernel, m);
  scaled_residual(x, scales.res_scale, m, scales.layer_scale, y);
}
void Backend::glu_linear(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset, int64_t width,
                          const Activation& act, const Tensor& w, const Tensor* b, Tensor& y) {
  Shape s = t.shape();
  s[-1] = width;
  Tensor h = Tensor::empty(s, device(), activation_dtype());
  glu(t, c, gate_offset, value_offset, act, h);
  linear(h, w, b, y);
}
void Backend::gated_cnn_branch(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                               int64_t hidden, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                               const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales,
                               Tensor& y) {
  const int64_t conv_ch = dw_w.dim(0);
  Tensor m = Tensor::empty(y.shape(), device(), activation_dtype());
  {
    Shape ts = x.shape();
    ts[-1] = 2 * hidden;
    Tensor t = Tensor::empty(ts, device(), activation_dtype());
    {
      Tensor n = Tensor::empty(x.shape(), device(), activation_dtype());
      branch_norm(x, norm, n);
      linear(n, w1, b1, t);
    }
    Shape cs = x.shape();
    cs[-1] = conv_ch;
    Tensor c = Tensor::empty(cs, device(), activation_dtype());
    {
      Tensor s = Tensor::empty(cs, device(), activation_dtype());
      channel_slice(t, 2 * hidden - conv_ch, s);
      depthwise_conv2d(s, dw_w, dw_b, g, c);
    }
    glu_linear(t, &c, 0, hidden, hidden, act, w2, b2, m);
  }
  scaled_residual(x, scales.res_scale, m, scales.layer_scale, y);
}
void Backend::sepconv_branch(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                             const Activation& act, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                             const Tensor& w2, const Tensor* b2, const BranchScales& scales, Tensor& y) {
  // Each intermediate released as soon as the next one exists (the widest, h, is 2x the input).
  Tensor m = Tensor::empty(y.shape(), device(), activation_dtype());
  {
    Shape hs = x.shape();
    hs[-1] = w1.dim(0);
    Tensor h = Tensor::empty(hs, device(), activation_dtype());
    {
      Tensor n = Tensor::empty(x.shape(), device(), activation_dtype());
      branch_norm(x, norm, n);
      linear_act(n, w1, b1, act, h);
    }
    depthwise_linear(h, dw_w, dw_b, g, w2, b2, m);
  }
  scaled_residual(x, scales.res_scale, m, scales.layer_scale, y);
}
void Backend::depthwise_linear(const Tensor& x, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                               const Tensor& w, const Tensor* b, Tensor& y) {
  Tensor h = Tensor::empty({x.dim(0), g.out_h(x.dim(1)), g.out_w(x.dim(2)), x.dim(3)}, device(), activation_dtype());
  depthwise_conv2d(x, dw_w, dw_b, g, h);
  linear(h, w, b, y);
}
void Backend::mlp(const Tensor& x, const Tensor& w1, const Tensor* b1, const Activation& act, const Tensor& w2,
                  const Tensor* b2, Tensor& y) {
  Shape hs = x.shape();
  hs[-1] = w1.dim(0);
  Tensor h = Tensor::empty(hs, device(), activation_dtype());
  linear_act(x, w1, b1, act, h);
  linear(h, w2, b2, y);
}
void Backend::attention_training(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) {
  attention(qkv, heads, head_dim, scale, y);
}
void Backend::attention_training_stats(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y,
                                       Tensor& stats) {
  stats = Tensor();
  attention_training(qkv, heads, head_dim, scale, y);
}
void Backend::attention_backward_stats(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                       const Tensor&, const Tensor&, Tensor& dqkv) {
  attention_backward(qkv, heads, head_dim, scale, dy, dqkv);
}
void Backend::linear_act(const Tensor& x, const Tensor& w, const Tensor* b, const Activation& act, Tensor& y) {
  linear(x, w, b, y);
  activation(y, act, y);
}
void Backend::linear_act_train(const Tensor& x, const Tensor& w, const Tensor* b, const Activation& act, Tensor& pre,
                               Tensor& y) {
  linear(x, w, b, pre);
  activation(pre, act, y);
}
void Backend::linear_act_backward(const Tensor& h, const Tensor& pre, const Activation& act, const Tensor& w,
                                  const Tensor& dy, Tensor& dpre, Tensor* dw, Tensor* db, Tensor* dscale,
                                  Tensor* dbias) {
  Tensor dh = Tensor::empty(h.shape(), device(), activation_dtype());
  linear_backward(h, w, dy, &dh, dw, db);
  activation_backward(pre, act, dh, dpre, dscale, dbias);
}
void Backend::linear_scaled_residual(const Tensor& h, const Tensor& w, const Tensor* b, const Tensor* ls,
                                     const Tensor& skip, Tensor& y) {
  Tensor m = Tensor::empty(y.shape(), device(), activation_dtype());
  linear(h, w, b, m);
  scaled_residual(skip, nullptr, m, ls, y);
}
void Backend::linear_act_scaled_backward(const Tensor& h, const Tensor& pre, const Activation& act, const Tensor& w,
                                         const Tensor* b, const Tensor& ls, const Tensor& dy, Tensor& dpre,
                                         Tensor* dw, Tensor* db, Tensor* dls, Tensor* dscale, Tensor* dbias) {
  Tensor dbranch = Tensor::empty(dy.shape(), device(), activation_dtype());
  {
    // The branch output m = h · wᵀ + b again: dls += Σ dy ⊙ m (x, read only for a res scale's
    // gradient, is m too; dx is not written: need_dx false in op terms, an empty tensor here).
    Tensor m;
    if (dls) {
      m = Tensor::empty(dy.shape(), device(), activation_dtype());
      linear(h, w, b, m);
    }
    Tensor no_dx;
    scaled_residual_backward(m.defined() ? m : dy, nullptr, m, &ls, dy, no_dx, dbranch, nullptr, dls);
  }
  linear_act_backward(h, pre, act, w, dbranch, dpre, dw, db, dscale, dbias);
}
void Backend::pool_branch_backward(const Tensor& x, const BranchNorm& norm, int kernel, const Tensor& ls,
                                   const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db, Tensor* dls) {
  Tensor q = Tensor::empty(x.shape(), device(), activation_dtype());
  {
    // dbranch = dy ⊙ ls, and dls += Σ dy ⊙ m with m = pool(n) − n recomputed.
    Tensor m, dbranch = Tensor::empty(x.shape(), device(), activation_dtype());
    if (dls) {
      Tensor n = Tensor::empty(x.shape(), device(), activation_dtype());
      group_norm1(x, *norm.weight, norm.bias, norm.eps, n);
      m = Tensor::empty(x.shape(), device(), activation_dtype());
      pool_minus_input(n, kernel, m);
    }
    Tensor no_dx;
    scaled_residual_backward(x, nullptr, m, &ls, dy, no_dx, dbranch, nullptr, dls);
    pool_minus_input_backward(dbranch, kernel, q);
  }
  group_norm1_backward_add(x, *norm.weight, norm.eps, q, dy, nullptr, dx, dw, db, nullptr);
}
void Backend::conv2d(const Tensor&, const Tensor&, const Tensor*, const ConvGeometry&, Tensor&) {
  unsupported(OpKind::Conv2d);
}
void Backend::depthwise_conv2d(const Tensor&, const Tensor&, const Tensor*, const ConvGeometry&, Tensor&) {
  unsupported(OpKind::DepthwiseConv2d);
}
void Backend::act_depthwise_conv2d(const Tensor& pre, const Activation& act, const Tensor& w, const Tensor* b,
                                   const ConvGeometry& g, Tensor& y) {
  Tensor h = Tensor::empty(pre.shape(), device(), activation_dtype());
  activation(pre, act, h);
  depthwise_conv2d(h, w, b, g, y);
}
void Backend::depthwise_conv2d_slice(const Tensor& t, int64_t offset, const Tensor& w, const Tensor* b,
                                     const ConvGeometry& g, Tensor& y) {
  Tensor x = Tensor::empty({t.dim(0), t.dim(1), t.dim(2), w.dim(0)}, device(), activation_dtype());
  channel_slice(t, offset, x);
  depthwise_conv2d(x, w, b, g, y);
}
void Backend::gated_conv_backward(const Tensor& t, const Tensor& c, int64_t hidden, int64_t offset,
                                  const Activation& act, const Tensor& w, const ConvGeometry& g, const Tensor& dz,
                                  Tensor& dt, Tensor* dw, Tensor* db) {
  Tensor dc = Tensor::empty(c.shape(), device(), activation_dtype());
  glu_backward(t, &c, 0, hidden, act, dz, dt, &dc);
  Tensor x = Tensor::empty(c.shape(), device(), activation_dtype());
  channel_slice(t, offset, x);
  Tensor dx = Tensor::empty(c.shape(), device(), activation_dtype());
  depthwise_conv2d_backward(x, w, g, dc, &dx, dw, db);
  channel_slice_backward(dx, offset, dt);
}
void Backend::act_depthwise_conv2d_backward(const Tensor& pre, const Activation& act, const Tensor& w,
                                            const ConvGeometry& g, const Tensor& dy, Tensor& dpre, Tensor* dw,
                                            Tensor* db, Tensor* dscale, Tensor* dbias) {
  Tensor dh = Tensor::empty(pre.shape(), device(), activation_dtype());
  {
    Tensor h = Tensor::empty(pre.shape(), device(), activation_dtype());
    activation(pre, act, h);
    depthwise_conv2d_backward(h, w, g, dy, &dh, dw, db);
  }
  activation_backward(pre, act, dh, dpre, dscale, dbias);
}
void Backend::pool_minus_input(const Tensor&, int, Tensor&) { unsupported(OpKind::PoolMinusInput); }
void Backend::layer_norm(const Tensor&, const Tensor&, const Tensor*, float, Tensor&) {
  unsupported(OpKind::LayerNorm);
}
void Backend::group_norm1(const Tensor&, const Tensor&, const Tensor*, float, Tensor&) {
  unsupported(OpKind::GroupNorm1);
}
void Backend::activation(const Tensor&, const Activation&, Tensor&) { unsupported(OpKind::Activation); }
void Backend::scaled_residual(const Tensor&, const Tensor*, const Tensor&, const Tensor*, Tensor&) {
  unsupported(OpKind::ScaledResidual);
}
void Backend::global_avg_pool(const Tensor&, Tensor&) { unsupported(OpKind::GlobalAvgPool); }
void Backend::attention(const Tensor&, int, int, float, Tensor&) { unsupported(OpKind::Attention); }
void Backend::token_mix(const Tensor&, const Tensor&, const Tensor*, Tensor&) { unsupported(OpKind::TokenMix); }
void Backend::channel_slice(const Tensor&, int64_t, Tensor&) { unsupported(OpKind::ChannelSlice); }
void Backend::glu(const Tensor&, const Tensor*, int64_t, int64_t, const Activation&, Tensor&) {
  unsupported(OpKind::Glu);
}
void Backend::channel_affine(const Tensor&, const Tensor&, const Tensor&, Tensor&) {
  unsupported(OpKind::ChannelAffine);
}
void Backend::channel_slice_backward(const Tensor&, int64_t, Tensor&) { unsupported(OpKind::ChannelSlice); }
void Backend::rfft2(const Tensor&, float, Tensor&) { unsupported(OpKind::Rfft2); }
void Backend::irfft2(const Tensor&, float, Tensor&) { unsupported(OpKind::Irfft2); }
void Backend::complex_mul(const Tensor&, const Tensor&, bool, Tensor&) { unsupported(OpKind::ComplexMul); }
void Backend::haar2d(const Tensor&, bool, Tensor&) { unsupported(OpKind::Haar2d); }
void Backend::embedding(const Tensor&, const Tensor&, Tensor&) { unsupported(OpKind::Embedding); }
void Backend::add_positions(const Tensor&, const Tensor&, Tensor&) { unsupported(OpKind::AddPositions); }
void Backend::causal_attention(const Tensor&, int, int, float, Tensor&) { unsupported(OpKind::CausalAttention); }
void Backend::causal_conv1d(const Tensor&, const Tensor&, const Tensor*, Tensor&) {
  unsupported(OpKind::CausalConv1d);
}
void Backend::selective_scan(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, const Tensor&,
                             const Tensor&, Tensor&) {
  unsupported(OpKind::SelectiveScan);
}
void Backend::bidirectional_scan(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, const Tensor&,
                                 const Tensor&, Tensor&) {
  unsupported(OpKind::BidirectionalScan);
}
void Backend::bidirectional_scan_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t,
                                          const Tensor&, const Tensor&, const Tensor&, int64_t, Tensor&, Tensor&,
                                          Tensor&, Tensor&, Tensor*, Tensor*) {
  unsupported(OpKind::BidirectionalScan);
}
void Backend::ponet_pool(const Tensor&, int, int64_t, int, Tensor&) { unsupported(OpKind::PonetPool); }
void Backend::ponet_pool_backward(const Tensor&, int, int64_t, int, const Tensor&, Tensor&) {
  unsupported(OpKind::PonetPool);
}
void Backend::rms_norm(const Tensor&, const Tensor&, float, Tensor&) { unsupported(OpKind::RmsNorm); }
void Backend::rms_norm_backward(const Tensor&, const Tensor&, float, const Tensor&, Tensor&, Tensor*) {
  unsupported(OpKind::RmsNorm);
}
void Backend::embedding_backward(const Tensor&, const Tensor&, Tensor&) { unsupported(OpKind::Embedding); }
void Backend::add_positions_backward(const Tensor&, Tensor&) { unsupported(OpKind::AddPositions); }
void Backend::causal_attention_backward(const Tensor&, int, int, float, const Tensor&, Tensor&) {
  unsupported(OpKind::CausalAttention);
}
void Backend::causal_conv1d_backward(const Tensor&, const Tensor&, const Tensor&, Tensor*, Tensor*, Tensor*) {
  unsupported(OpKind::CausalConv1d);
}
void Backend::selective_scan_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t,
                                      const Tensor&, const Tensor&, const Tensor&, int64_t, Tensor&, Tensor&, Tensor&,
                                      Tensor&, Tensor*, Tensor*) {
  unsupported(OpKind::SelectiveScan);
}
void Backend::batch_norm_stats(const Tensor&, Tensor&, Tensor&) { unsupported(OpKind::BatchNorm); }
void Backend::batch_norm(const Tensor&, const Tensor&, const Tensor*, const Tensor&, const Tensor&, float, Tensor&) {
  unsupported(OpKind::BatchNorm);
}
void Backend::batch_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, float, bool,
                                  const Tensor&, Tensor&, Tensor*, Tensor*) {
  unsupported(OpKind::BatchNorm);
}
void Backend::permute(const Tensor&, const std::vector<int>&, Tensor&) { unsupported(OpKind::Permute); }
void Backend::resize_bicubic(const Tensor&, bool, Tensor&) { unsupported(OpKind::ResizeBicubic); }
void Backend::strip_mix(const Tensor&, const Tensor&, const Tensor*, int, Tensor&) { unsupported(OpKind::StripMix); }
void Backend::strip_mix_backward(const Tensor&, const Tensor&, int, const Tensor&, Tensor*, Tensor*, Tensor*) {
  unsupported(OpKind::StripMix);
}
void Backend::split_attention(const std::vector<Tensor>&, const Tensor&, Tensor&) {
  unsupported(OpKind::SplitAttention);
}
void Backend::split_attention_backward(const std::vector<Tensor>&, const Tensor&, const Tensor&, std::vector<Tensor>&,
                                       Tensor&) {
  unsupported(OpKind::SplitAttention);
}
void Backend::grn(const Tensor&, const Tensor&, const Tensor&, Tensor&) { unsupported(OpKind::Grn); }
void Backend::gate(const Tensor&, const Tensor&, bool, Tensor&) { unsupported(OpKind::Gate); }
void Backend::gate_backward(const Tensor&, const Tensor&, bool, const Tensor&, Tensor&, Tensor&) {
  unsupported(OpKind::Gate);
}
void Backend::grn_backward(const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor*, Tensor*) {
  unsupported(OpKind::Grn);
}
void Backend::conv_transpose2d(const Tensor&, const Tensor&, const Tensor*, const ConvGeometry&, Tensor&) {
  unsupported(OpKind::ConvTranspose2d);
}
void Backend::conv_transpose2d_backward(const Tensor&, const Tensor&, const ConvGeometry&, const Tensor&, Tensor*,
                                        Tensor*, Tensor*) {
  unsupported(OpKind::ConvTranspose2d);
}
void Backend::max_pool2d(const Tensor&, const ConvGeometry&, Tensor&) { unsupported(OpKind::MaxPool2d); }
void Backend::max_pool2d_backward(const Tensor&, const ConvGeometry&, const Tensor&, Tensor&) {
  unsupported(OpKind::MaxPool2d);
}
void Backend::sum_pool2d(const Tensor&, int, float, Tensor&) { unsupported(OpKind::AvgPool2d); }
void Backend::upsample_nearest(const Tensor&, int, float, Tensor&) { unsupported(OpKind::UpsampleNearest); }
void Backend::softmax_gate(const Tensor&, const Tensor&, Tensor&) { unsupported(OpKind::SoftmaxGate); }
void Backend::softmax_gate_backward(const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&) {
  unsupported(OpKind::SoftmaxGate);
}
void Backend::spatial_shift(const Tensor&, int, int64_t, const std::vector<int>&, Tensor&) {
  unsupported(OpKind::SpatialShift);
}
void Backend::complex_mul_backward(const Tensor&, const Tensor&, const Tensor&, Tensor*, Tensor*) {
  unsupported(OpKind::ComplexMul);
}
void Backend::glu_backward(const Tensor&, const Tensor*, int64_t, int64_t, const Activation&, const Tensor&, Tensor&,
                           Tensor*) {
  unsupported(OpKind::Glu);
}
void Backend::channel_affine_backward(const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor*, Tensor*) {
  unsupported(OpKind::ChannelAffine);
}
void Backend::nchw_to_nhwc(const Tensor&, Tensor&) { unsupported(OpKind::NchwToNhwc); }
void Backend::sample_scale(const Tensor&, const Tensor&, Tensor&) { unsupported(OpKind::SampleScale); }
void Backend::augment_crops(const Tensor&, const Tensor&, const Tensor&, Tensor&) {
  unsupported(OpKind::AugmentCrops);
}
void Backend::mix_images(const Tensor&, const MixPlan&, Tensor&) { unsupported(OpKind::MixImages); }
void Backend::cross_entropy(const Tensor&, const Tensor&, float, Tensor&, Tensor&) {
  unsupported(OpKind::CrossEntropy);
}
void Backend::linear_backward(const Tensor&, const Tensor&, const Tensor&, Tensor*, Tensor*, Tensor*) {
  unsupported(OpKind::Linear);
}
void Backend::conv2d_backward(const Tensor&, const Tensor&, const ConvGeometry&, const Tensor&, Tensor*, Tensor*,
                              Tensor*) {
  unsupported(OpKind::Conv2d);
}
void Backend::depthwise_conv2d_backward(const Tensor&, const Tensor&, const ConvGeometry&, const Tensor&, Tensor*,
                                        Tensor*, Tensor*) {
  unsupported(OpKind::DepthwiseConv2d);
}
void Backend::pool_minus_input_backward(const Tensor&, int, Tensor&) { unsupported(OpKind::PoolMinusInput); }
void Backend::layer_norm_backward(const Tensor&, const Tensor&, float, const Tensor&, Tensor&, Tensor*, Tensor*) {
  unsupported(OpKind::LayerNorm);
}
void Backend::group_norm1_backward(const Tensor&, const Tensor&, float, const Tensor&, Tensor&, Tensor*, Tensor*) {
  unsupported(OpKind::GroupNorm1);
}
// The skip gradient residual ⊙ res_scale (and d_res_scale's sum) by scaled_residual_backward, or
// residual itself without a scale.
Tensor Backend::scaled_skip(const Tensor& x, const Tensor& residual, const Tensor* res_scale, Tensor* d_res_scale) {
  if (!res_scale) return residual;
  Tensor skip = Tensor::empty(residual.shape(), device(), activation_dtype());
  Tensor unused = Tensor::empty(residual.shape(), device(), activation_dtype());
  scaled_residual_backward(x, res_scale, Tensor(), nullptr, residual, skip, unused, d_res_scale, nullptr);
  return skip;
}
void Backend::layer_norm_backward_add(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                                      const Tensor& residual, const Tensor* res_scale, Tensor& dx, Tensor* dw,
                                      Tensor* db, Tensor* d_res_scale) {
  norm_backward_then_add(false, x, w, eps, dy, residual, res_scale, dx, dw, db, d_res_scale);
}
void Backend::group_norm1_backward_add(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                                       const Tensor& residual, const Tensor* res_scale, Tensor& dx, Tensor* dw,
                                       Tensor* db, Tensor* d_res_scale) {
  norm_backward_then_add(true, x, w, eps, dy, residual, res_scale, dx, dw, db, d_res_scale);
}
void Backend::norm_backward_then_add(bool group, const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                                     const Tensor& residual, const Tensor* res_scale, Tensor& dx, Tensor* dw,
                                     Tensor* db, Tensor* d_res_scale) {
  const Tensor skip = scaled_skip(x, residual, res_scale, d_res_scale);
  if (group)
    group_norm1_backward(x, w, eps, dy, dx, dw, db);
  else
    layer_norm_backward(x, w, eps, dy, dx, dw, db);
  scaled_residual(skip, nullptr, dx, nullptr, dx);
}
void Backend::activation_backward(const Tensor&, const Activation&, const Tensor&, Tensor&, Tensor*, Tensor*) {
  unsupported(OpKind::Activation);
}
void Backend::scaled_residual_backward(const Tensor&, const Tensor*, const Tensor&, const Tensor*, const Tensor&,
                                       Tensor&, Tensor&, Tensor*, Tensor*) {
  unsupported(OpKind::ScaledResidual);
}
void Backend::global_avg_pool_backward(const Tensor&, Tensor&) { unsupported(OpKind::GlobalAvgPool); }
void Backend::attention_backward(const Tensor&, int, int, float, const Tensor&, Tensor&) {
  unsupported(OpKind::Attention);
}
void Backend::token_mix_backward(const Tensor&, const Tensor&, const Tensor&, Tensor*, Tensor*, Tensor*) {
  unsupported(OpKind::TokenMix);
}

Backend& get_backend(const std::string& name, Precision precision) {
  static RefBackend ref;
  static CpuBackend cpu(Precision::fp32);
  static CpuBackend cpu_bf16(Precision::bf16);
  if (name == "ref") {
    MF_CHECK(precision == Precision::fp32, "the ref backend computes in fp32 only (asked for {})",
             precision_name(precision));
    return ref;
  }
  if (name == "cpu") return precision == Precision::bf16 ? cpu_bf16 : cpu;
  if (name == "cuda") {
#ifdef MF_HAVE_CUDA
    return cuda_backend(precision);
#else
    fail("backend cuda is not available: this build has no CUDA (configure on a machine with the CUDA toolkit, "
         "-DMETAFORMER_CUDA=ON)");
#endif
  }
  fail("unknown backend '{}' (available: {})", name, available_backends());
}

const char* precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "fp32"; }

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::fp32;
  if (name == "bf16") return Precision::bf16;
  fail("unknown precision '{}' (available: fp32, bf16)", name);
}

std::string available_backends() { return built_with_cuda() ? "cpu, cuda, ref" : "cpu, ref"; }

bool built_with_cuda() {
#ifdef MF_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int gpu_count() {
#ifdef MF_HAVE_CUDA
  return cuda_device_count();
#else
  return 0;
#endif
}

size_t gpu_peak_bytes() {
#ifdef MF_HAVE_CUDA
  return gpu_count() > 0 ? cuda_peak_bytes() : 0;
#else
  return 0;
#endif
}

std::string gpu_peak_blocks() {
#ifdef MF_HAVE_CUDA
  return gpu_count() > 0 ? cuda_peak_blocks() : std::string();
#else
  return {};
#endif
}

void reset_gpu_peak() {
#ifdef MF_HAVE_CUDA
  if (gpu_count() > 0) cuda_reset_peak();
#endif
}

void set_gpu_matmul(const std::string& mode) {
  MF_CHECK(mode == "fp32" || mode == "tf32" || mode == "bf16", "unknown --matmul '{}' (fp32, tf32 or bf16)", mode);
#ifdef MF_HAVE_CUDA
  cuda_set_fp32_matmul(mode);
#else
  MF_CHECK(mode == "fp32", "--matmul {} needs the cuda backend: this build has no CUDA", mode);
#endif
}

void select_device(const std::string& spec, const std::string& backend) {
  if (spec.empty()) return;
  if (spec == "cpu") {
    MF_CHECK(backend != "cuda", "--device cpu does not go with --backend cuda (use --device cuda:N)");
    return;
  }
  MF_CHECK(spec.rfind("cuda", 0) == 0, "unknown device '{}' (use cpu, cuda or cuda:N)", spec);
  int index = 0;
  if (spec != "cuda") {
    const std::string n = spec.substr(4);
    MF_CHECK(n.size() >= 2 && n[0] == ':' && n.find_first_not_of("0123456789", 1) == std::string::npos,
             "unknown device '{}' (use cpu, cuda or cuda:N)", spec);
    MF_CHECK(n.size() < 6, "device {} does not exist", spec);
    index = std::stoi(n.substr(1));
  }
  MF_CHECK(backend == "cuda", "--device {} needs --backend cuda (the {} backend runs on the CPU)", spec, backend);
#ifdef MF_HAVE_CUDA
  cuda_select_device(index);
#else
  static_cast<void>(index);
  fail("device {} is not available: this build has no CUDA", spec);
#endif
}

}  // namespace mf
