#include "mixers/mixer.h"

#include "nn/norm.h"

namespace mf {

Tensor TokenMixer::run_branch(Ctx& ctx, const Tensor& x, Norm& norm, const BranchScales& scales) {
  Tensor branch = run(ctx, norm.run(ctx, x));
  if (branch.same_memory(x)) branch = branch.clone();  // a mixer may return its input; never write over x
  return op::scaled_residual(ctx.exec, x, scales.res_scale, branch, scales.layer_scale);
}

Tensor TokenMixer::run_scaled_branch_train(Ctx&, const Tensor&, Norm&, const Tensor&) { return Tensor(); }

Tensor TokenMixer::run_residual_train(Ctx&, const Tensor&, const Tensor&) { return Tensor(); }

Tensor TokenMixer::backward_scaled_branch(Ctx&, const Tensor&, Norm&, const Tensor&, const Tensor&, Tensor*) {
  MF_CHECK(false, "{}: backward_scaled_branch without run_scaled_branch_train", path());
  return Tensor();
}

}  // namespace mf
