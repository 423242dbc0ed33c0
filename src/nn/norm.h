// Normalisation layers on channels-last data. In channels-last, timm's LayerNorm, LayerNorm2d,
// LayerNormNoBias and LayerNorm2dNoBias are one op (normalise over C at each position); GroupNorm1
// and GroupNorm1NoBias normalise each sample over H·W·C. NoBias variants have no bias parameter
// (and so no state-dict key).
//
// BatchNorm ("batch_norm", nn.BatchNorm2d on channels-last data) normalises each channel over every
// position of the batch: in training with the batch's statistics, updating the running ones as
// PyTorch does (running = (1 - momentum) · running + momentum · batch, with the unbiased batch
// variance; num_batches_tracked counts the updates), in eval with the running statistics. Its
// state-dict keys are PyTorch's: weight, bias, running_mean, running_var, num_batches_tracked.
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
  // backward(dy) + residual ⊙ res_scale (1 without), and d_res_scale += Σ x ⊙ residual with x this
  // norm's input: a block's skip gradient, y = x ⊙ res_scale + branch(norm(x)), added as the norm
  // writes dx (LayerNorm and GroupNorm: one op, Backend::layer_norm_backward_add; the other norms:
  // scaled_residual_backward, backward, then an add).
  Tensor backward_add(Ctx& ctx, const Tensor& dy, const Tensor& residual, const Tensor* res_scale = nullptr,
                      Tensor* d_res_scale = nullptr);
  void collect_ops(std::set<OpKind>& ops) const override;
  const NormSpec& spec() const { return spec_; }
  Parameter* weight() { return weight_; }
  Parameter* bias() { return bias_; }
  // This norm as a fused block branch's argument, if it is one such a branch can apply (LayerNorm or
  // GroupNorm with one group; not ResMLP's affine).
  std::optional<BranchNorm> as_branch_norm();
  // BatchNorm in eval mode as y = x ⊙ scale + shift per channel: scale = w / sqrt(running_var + eps),
  // shift = b - running_mean ⊙ scale; what folding into a neighbouring conv or linear layer uses.
  std::pair<Tensor, Tensor> eval_affine() const;
  // The storage and version of every value eval_affine reads: a key for caches of folded weights.
  std::string affine_signature() const;
  Parameter* running_mean() { return running_mean_; }
  Parameter* running_var() { return running_var_; }
  Parameter* num_batches_tracked() { return num_batches_tracked_; }

 private:
  NormSpec spec_;
  int64_t channels_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
  Parameter* running_mean_ = nullptr;  // batch_norm: the buffers
  Parameter* running_var_ = nullptr;
  Parameter* num_batches_tracked_ = nullptr;
  Tensor saved_x_;
  Tensor saved_mean_, saved_var_;  // batch_norm: the statistics the training forward used
  void update_running_stats(const Tensor& batch_mean, const Tensor& batch_var, int64_t count);
};

// A conv or linear layer (weight [out, ...], bias [out] or null) followed by `bn`, a BatchNorm in eval
// mode, as one layer: weight ⊙ scale[out] and bias ⊙ scale + shift (Norm::eval_affine). Computed at
// each call from the current values, so it can never go stale after loading or training.
std::pair<Tensor, Tensor> fold_batch_norm(const Tensor& weight, const Tensor* bias, const Norm& bn);
// conv then (optionally) norm. At inference a BatchNorm is folded into the convolution: one op,
// no pass over the activations for the norm (neither layer then reports its own output to
// ctx.on_output). In training, the two layers as usual.
class Conv2d;
Tensor conv_then_norm(Ctx& ctx, Conv2d& conv, Norm* norm, const Tensor& x);

}  // namespace mf
