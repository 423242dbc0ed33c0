// AdamW with PyTorch's semantics (torch.optim.AdamW, decoupled weight decay), over the trainable
// parameters of a module tree. As timm's param_groups_weight_decay does, weight decay applies only to
// parameters with decay = true (weights of convolutions and linear layers; not norms, biases, scales
// or other 1-D parameters). The optimizer state lives on the parameters' device.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "nn/module.h"

namespace mf {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.05;
};

class AdamW {
 public:
  AdamW(Module& model, AdamWOptions options);

  // Allocates (if needed) and zeroes every trainable parameter's gradient. The gradients are views
  // of one flat buffer, in parameter order, each at a 256-byte boundary (flat_gradients(); the gaps
  // between them stay zero): zeroing them is one fill (one launch
  // on a GPU instead of one per tensor), and a data-parallel step all-reduces the buffer in one call.
  void zero_grad();
  // The buffer that every gradient views; defined after zero_grad().
  Tensor& flat_gradients() { return flat_grads_; }
  // One update with learning rate `lr` (the schedule's value for this step).
  void step(double lr);
  // Scales all gradients so that their global L2 norm is at most max_norm (torch's
  // clip_grad_norm_); returns the norm before clipping.
  double clip_grad_norm(double max_norm);
  double grad_norm() const;

  int64_t steps() const { return steps_; }
  // Where the parameters, their gradients and the moments live (all on one device; the step runs
  // there: the cpu backend's loop, or the cuda backend's multi-tensor kernels).
  Device device() const;
  const AdamWOptions& options() const { return options_; }
  const std::vector<std::pair<std::string, Parameter*>>& params() const { return params_; }

  // State for checkpoints: exp_avg / exp_avg_sq per parameter (named "<param>.exp_avg", ...) and the step.
  void save_state(std::vector<SafeTensorEntry>& out, const std::string& prefix) const;
  void load_state(const SafeTensors& file, const std::string& prefix);

 private:
  AdamWOptions options_;
  std::vector<std::pair<std::string, Parameter*>> params_;  // trainable only
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  Tensor flat_grads_;
  int64_t steps_ = 0;
  // True while every gradient is still its view of flat_grads_ (a move between devices replaces them).
  bool gradients_are_views() const;
};

}  // namespace mf
