#include "mixers/mixer.h"

#include "nn/norm.h"

namespace mf {

Tensor TokenMixer::run_branch(Ctx& ctx, const Tensor& x, Norm& norm, const BranchScales& scales) {
  Tensor branch = run(ctx, norm.run(ctx, x));
  if (branch.same_memory(x)) branch = branch.clone();  // a mixer may return its input; never write over x
  return op::scaled_residual(ctx.exec, x, scales.res_scale, branch, scales.layer_scale);
}

}  // namespace mf
