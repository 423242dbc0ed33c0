// Activation layers. StarReLU (s · relu(x)² + b) owns two learnable scalars, `scale` and `bias`,
// each of shape [1] as in timm; the others have no parameters.
#pragma once

#include <memory>
#include <string>

#include "nn/module.h"

namespace mf {

class ActivationLayer : public Module {
 public:
  explicit ActivationLayer(ActKind kind);
  std::string kind() const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  void collect_ops(std::set<OpKind>& ops) const override;
  // Replaces x by act(x): in place at inference (the caller gives x up); in training the input is
  // kept for backward and x becomes a new tensor.
  void apply_(Ctx& ctx, Tensor& x);
  Activation params() const;
  // For a Linear that runs this activation inside its own ops (Linear::run_act_train, then
  // backward_through): keep_input stores the pre-activation the backward reads; take_kept hands it
  // back, with this layer's scalar gradients (StarReLU's; null otherwise), and forgets it.
  struct Kept {
    Tensor pre;
    Tensor* dscale = nullptr;
    Tensor* dbias = nullptr;
  };
  void keep_input(const Tensor& pre) { saved_x_ = pre; }
  Kept take_kept();

 private:
  ActKind kind_;
  Parameter* scale_ = nullptr;  // StarReLU only
  Parameter* bias_ = nullptr;
  Tensor saved_x_;
};

// "gelu" | "starrelu" | "squared_relu" | "relu" | "silu" | "identity"
ActKind parse_activation(const std::string& name);
std::unique_ptr<ActivationLayer> make_activation(const std::string& name);

}  // namespace mf
