// The fast CPU backend: oneDNN for GEMMs and dense convolutions; direct channels-last kernels,
// vectorised over channels and parallel over rows with OpenMP, for everything memory-bound.
// Ops without a fast kernel inherit the reference implementation (same device, so no transfer).
#pragma once

#include "ops/ref/ref_backend.h"

namespace mf {

class CpuBackend : public RefBackend {
 public:
  std::string name() const override { return "cpu"; }

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

}  // namespace mf
