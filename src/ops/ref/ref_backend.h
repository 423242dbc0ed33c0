// The reference backend: the plainest correct loops, accumulating in double, one file per op.
// It is slow on purpose (no blocking, no vectorisation tricks) and must stay obviously right:
// every fast kernel and every future backend is tested against it.
#pragma once

#include "ops/backend.h"

namespace mf {

class RefBackend : public Backend {
 public:
  std::string name() const override { return "ref"; }
  Device device() const override { return Device::CPU; }
  bool supports(OpKind) const override { return true; }

  void linear(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) override;
  void conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y) override;
  void depthwise_conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g,
                        Tensor& y) override;
  void pool_minus_input(const Tensor& x, int kernel, Tensor& y) override;
  void layer_norm(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y) override;
  void group_norm1(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y) override;
  void activation(const Tensor& x, const Activation& act, Tensor& y) override;
  void scaled_residual(const Tensor& x, const Tensor* res_scale, const Tensor& branch, const Tensor* layer_scale,
                       Tensor& y) override;
  void global_avg_pool(const Tensor& x, Tensor& y) override;
  void attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) override;
  void token_mix(const Tensor& r, const Tensor& x, const Tensor* bias, Tensor& y) override;
  void nchw_to_nhwc(const Tensor& x, Tensor& y) override;
  void sample_scale(const Tensor& x, const Tensor& s, Tensor& y) override;
  void augment_crops(const Tensor& rows, const Tensor& headers, const Tensor& table, Tensor& y) override;
  void mix_images(const Tensor& x, const MixPlan& plan, Tensor& y) override;
  void cross_entropy(const Tensor& logits, const Tensor& target, float grad_scale, Tensor& loss,
                     Tensor& dlogits) override;
  void channel_slice(const Tensor& x, int64_t offset, Tensor& y) override;
  void glu(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset, const Activation& act,
           Tensor& y) override;
  void channel_affine(const Tensor& x, const Tensor& alpha, const Tensor& beta, Tensor& y) override;
  void rfft2(const Tensor& x, float mid_scale, Tensor& y) override;
  void irfft2(const Tensor& x, float mid_scale, Tensor& y) override;
  void complex_mul(const Tensor& a, const Tensor& b, bool conj_b, Tensor& y) override;
  void haar2d(const Tensor& x, bool inverse, Tensor& y) override;
  // WaveMix's and iFormer's ops
  void conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y) override;
  void conv_transpose2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy, Tensor* dx,
                                 Tensor* dw, Tensor* db) override;
  void max_pool2d(const Tensor& x, const ConvGeometry& g, Tensor& y) override;
  void max_pool2d_backward(const Tensor& x, const ConvGeometry& g, const Tensor& dy, Tensor& dx) override;
  void sum_pool2d(const Tensor& x, int factor, float scale, Tensor& y) override;
  void upsample_nearest(const Tensor& x, int factor, float scale, Tensor& y) override;
  void embedding(const Tensor& ids, const Tensor& table, Tensor& y) override;
  void add_positions(const Tensor& x, const Tensor& pos, Tensor& y) override;
  void causal_attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) override;
  void causal_conv1d(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) override;
  void selective_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc, int64_t b_offset,
                      const Tensor& d_skip, const Tensor& z, Tensor& y) override;
  void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) override;
  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) override;
  void rms_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw) override;
  void add_positions_backward(const Tensor& dy, Tensor& dpos) override;
  void causal_attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                 Tensor& dqkv) override;
  void causal_conv1d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                              Tensor* db) override;
  void selective_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                               int64_t b_offset, const Tensor& d_skip, const Tensor& z, const Tensor& dy, int64_t chunk,
                               Tensor& du, Tensor& ddt_raw, Tensor& dbc, Tensor& dz, Tensor* da_log,
                               Tensor* dd_skip) override;
  void bidirectional_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc, int64_t b_offset,
                          const Tensor& dd, const Tensor& d_skip, Tensor& y) override;
  void bidirectional_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                   int64_t b_offset, const Tensor& dd, const Tensor& d_skip, const Tensor& dy,
                                   int64_t chunk, Tensor& du, Tensor& ddt_raw, Tensor& dbc, Tensor& ddd, Tensor* da_log,
                                   Tensor* dd_skip) override;
  void ponet_pool(const Tensor& p, int heads, int64_t segment, int local_kernel, Tensor& y) override;
  void ponet_pool_backward(const Tensor& p, int heads, int64_t segment, int local_kernel, const Tensor& dy,
                           Tensor& dp) override;
  void batch_norm_stats(const Tensor& x, Tensor& mean, Tensor& var) override;
  void batch_norm(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& mean, const Tensor& var, float eps,
                  Tensor& y) override;
  void batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& var, float eps,
                           bool batch_stats, const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db) override;
  void permute(const Tensor& x, const std::vector<int>& perm, Tensor& y) override;
  void spatial_shift(const Tensor& x, int axis, int64_t group_width, const std::vector<int>& shifts,
                     Tensor& y) override;
  void resize_bicubic(const Tensor& x, bool adjoint, Tensor& y) override;
  void strip_mix(const Tensor& x, const Tensor& w, const Tensor* b, int axis, Tensor& y) override;
  void strip_mix_backward(const Tensor& x, const Tensor& w, int axis, const Tensor& dy, Tensor* dx, Tensor* dw,
                          Tensor* db) override;
  void split_attention(const std::vector<Tensor>& branches, const Tensor& logits, Tensor& y) override;
  void split_attention_backward(const std::vector<Tensor>& branches, const Tensor& logits, const Tensor& dy,
                                std::vector<Tensor>& dbranches, Tensor& dlogits) override;
  void grn(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y) override;
  void grn_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy, Tensor& dx, Tensor* dgamma,
                    Tensor* dbeta) override;
  void gate(const Tensor& x, const Tensor& g, bool sigmoid, Tensor& y) override;
  void gate_backward(const Tensor& x, const Tensor& g, bool sigmoid, const Tensor& dy, Tensor& dx,
                     Tensor& dg) override;
  void softmax_gate(const Tensor& x, const Tensor& logits, Tensor& y) override;
  void softmax_gate_backward(const Tensor& x, const Tensor& logits, const Tensor& dy, Tensor& dx,
                             Tensor& dlogits) override;
  void complex_mul_backward(const Tensor& a, const Tensor& b, const Tensor& dy, Tensor* da, Tensor* db) override;

  void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                       Tensor* db) override;
  void conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy, Tensor* dx,
                       Tensor* dw, Tensor* db) override;
  void depthwise_conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                                 Tensor* dx, Tensor* dw, Tensor* db) override;
  void pool_minus_input_backward(const Tensor& dy, int kernel, Tensor& dx) override;
  void layer_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw,
                           Tensor* db) override;
  void group_norm1_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw,
                            Tensor* db) override;
  void activation_backward(const Tensor& x, const Activation& act, const Tensor& dy, Tensor& dx,
                           Tensor* dscale, Tensor* dbias) override;
  void scaled_residual_backward(const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                                const Tensor* layer_scale, const Tensor& dy, Tensor& dx, Tensor& dbranch,
                                Tensor* d_res_scale, Tensor* d_layer_scale) override;
  void global_avg_pool_backward(const Tensor& dy, Tensor& dx) override;
  void attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                          Tensor& dqkv) override;
  void token_mix_backward(const Tensor& r, const Tensor& x, const Tensor& dy, Tensor* dx, Tensor* dr,
                          Tensor* dbias) override;
  void channel_slice_backward(const Tensor& dy, int64_t offset, Tensor& dx) override;
  void glu_backward(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset, const Activation& act,
                    const Tensor& dy, Tensor& dt, Tensor* dc) override;
  void channel_affine_backward(const Tensor& x, const Tensor& alpha, const Tensor& dy, Tensor& dx, Tensor* dalpha,
                               Tensor* dbeta) override;
};

// Scalar activation functions and their derivatives, shared with fast kernels' tails and tests.
float apply_activation(const Activation& act, float x);
double activation_derivative(const Activation& act, double x);

}  // namespace mf
