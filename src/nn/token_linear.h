// A linear layer over tokens instead of channels: y[b, m, c] = Σ_n W[m, n] · x[b, n, c] + bias[m].
// W [out_tokens, in_tokens] is stored like nn.Linear's weight, which is how timm's mlp_mixer.py
// stores it (there the layer is an nn.Linear applied to the transposed tokens). Input [B, ..., C]
// with the middle dimensions flattened to in_tokens (row-major h·W + w, as timm's flatten);
// output [B, out_tokens, C].
#pragma once

#include "nn/module.h"

namespace mf {

class TokenLinear : public Module {
 public:
  TokenLinear(int64_t in_tokens, int64_t out_tokens, bool bias, Init weight_init = Init::trunc_normal(0.02f),
              Init bias_init = Init::zeros());
  std::string kind() const override { return "Linear"; }
  std::string describe() const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::TokenMix); }
  int64_t in_tokens() const { return in_; }
  const Parameter& weight() const { return *weight_; }

 private:
  int64_t in_, out_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  Tensor saved_x_;
};

}  // namespace mf
