// Convolutions on channels-last activations with PyTorch's weight layouts.
#pragma once

#include "nn/module.h"

namespace mf {

class ActivationLayer;

// nn.Conv2d with groups = 1: weight [out, in, k, k].
class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, int kernel, int stride, int padding, bool bias);
  // Any geometry: a sequence model's patch embedding is 1 × patch with stride 1 × patch_stride.
  Conv2d(int64_t in, int64_t out, const ConvGeometry& g, bool bias);
  std::string kind() const override { return "Conv2d"; }
  std::string describe() const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::Conv2d); }
  const ConvGeometry& geometry() const { return g_; }
  // The stem's input is data: its gradient is never needed.
  void set_needs_input_grad(bool v) { needs_input_grad_ = v; }
  Parameter* weight() { return weight_; }
  Parameter* bias() { return bias_; }

 private:
  int64_t in_, out_;
  ConvGeometry g_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  bool needs_input_grad_ = true;
  Tensor saved_x_;
};

// nn.ConvTranspose2d with groups = 1: weight [in, out, k, k] (PyTorch's layout), bias [out];
// output side (in_side - 1)·stride - 2·padding + k (WaveMix's 4×4 stride-2 upsampling doubles it).
class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in, int64_t out, int kernel, int stride, int padding, bool bias);
  std::string kind() const override { return "ConvTranspose2d"; }
  std::string describe() const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::ConvTranspose2d); }

 private:
  int64_t in_, out_;
  ConvGeometry g_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  Tensor saved_x_;
};

// nn.Conv2d with groups = channels: weight [C, 1, k, k].
class DepthwiseConv2d : public Module {
 public:
  DepthwiseConv2d(int64_t channels, int kernel, int padding, bool bias, int stride = 1);
  std::string kind() const override { return "Conv2d"; }
  std::string describe() const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  // this(act(pre)) in a training step, for a caller that checked Backend::fuses_act_into_depthwise
  // (SepConv): one op (op::act_depthwise_conv2d) that keeps the pre-activation in `act`, whose own
  // forward and backward are then not called; act(pre) is never written. Reports its output to
  // ctx.on_output as forward's run() does.
  Tensor run_act_train(Ctx& ctx, const Tensor& pre, ActivationLayer& act);
  // This layer's backward together with that of the activation in front of it (`act`, which
  // run_act_train ran): returns the gradient of act's input (op::act_depthwise_conv2d_backward).
  Tensor backward_through(Ctx& ctx, const Tensor& dy, ActivationLayer& act);
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::DepthwiseConv2d); }
  const ConvGeometry& geometry() const { return g_; }
  Parameter* weight() { return weight_; }
  Parameter* bias() { return bias_; }

 private:
  int64_t channels_;
  ConvGeometry g_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  Tensor saved_x_;
};

}  // namespace mf
