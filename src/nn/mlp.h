// timm's Mlp with the MetaFormer settings: fc1 -> act -> fc2 (dropouts are identity at inference).
#pragma once

#include "nn/activation.h"
#include "nn/linear.h"

namespace mf {

class Mlp : public Module {
 public:
  // conv1x1: timm builds fc1/fc2 as 1×1 Conv2d (weights [out, in, 1, 1]) in channels-first stages.
  Mlp(int64_t dim, int64_t hidden, const std::string& act, bool bias, bool conv1x1);
  std::string kind() const override { return "Mlp"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  Linear* fc1_;
  ActivationLayer* act_;
  Linear* fc2_;
};

}  // namespace mf
