// Normalisation layers on channels-last data. In channels-last, timm's LayerNorm, LayerNorm2d,
// LayerNormNoBias and LayerNorm2dNoBias are one op (normalise over C at each position); GroupNorm1
// and GroupNorm1NoBias normalise each sample over H·W·C. NoBias variants have no bias parameter
// (and so no state-dict key).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "nn/module.h"
#include "nn/norm_spec.h"

namespace mf {

class Norm : public Module {
 public:
  Norm(const NormSpec& spec, int64_t channels);
  std::string kind() const override;
  std::string describe() const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  void collect_ops(std::set<OpKind>& ops) const override;
  const NormSpec& spec() const { return spec_; }
  Parameter* weight() { return weight_; }
  Parameter* bias() { return bias_; }
  // This norm as a fused block branch's argument, if it is one such a branch can apply (LayerNorm or
  // GroupNorm with one group; not ResMLP's affine).
  std::optional<BranchNorm> as_branch_norm();

 private:
  NormSpec spec_;
  int64_t channels_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  Tensor saved_x_;
};

}  // namespace mf
