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
  void token_mix(const Tensor& r, const Tensor& x, Tensor& y) override;
  void nchw_to_nhwc(const Tensor& x, Tensor& y) override;
};

// Scalar activation functions, shared with fast kernels' tails and with tests.
float apply_activation(const Activation& act, float x);

}  // namespace mf
