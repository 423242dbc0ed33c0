// PoolFormer's mixer: average pooling (stride 1, same padding, padded cells not counted) minus the
// input. The "- x" is there because the block adds x back: the branch contributes pool(x) - x.
#include <fmt/format.h>

#include "mixers/mixer.h"
#include "nn/norm.h"

namespace mf {

namespace {
class Pooling : public TokenMixer {
 public:
  explicit Pooling(int pool_size) : pool_size_(pool_size) {}
  std::string kind() const override { return "Pooling"; }
  std::string describe() const override { return fmt::format("avg pool {}x{} - x", pool_size_, pool_size_); }
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::PoolMinusInput); }
  Tensor forward(Ctx& ctx, const Tensor& x) override { return op::pool_minus_input(ctx.exec, x, pool_size_); }
  // With GroupNorm (PoolFormer's norm) the norm, the pooling and the residual are one op.
  Tensor run_branch(Ctx& ctx, const Tensor& x, Norm& norm, const BranchScales& scales) override {
    const std::optional<BranchNorm> bn = norm.as_branch_norm();
    if (ctx.training || !bn || bn->type != BranchNorm::Type::group_norm1)
      return TokenMixer::run_branch(ctx, x, norm, scales);
    return op::pool_branch(ctx.exec, x, *bn, pool_size_, scales);
  }
  // Training, where the backend folds layer scales: the same one op, whose backward recomputes the
  // norm's statistics from x (op::pool_branch_backward), so nothing but x (the block keeps it) is saved.
  Tensor run_scaled_branch_train(Ctx& ctx, const Tensor& x, Norm& norm, const Tensor& ls) override {
    const std::optional<BranchNorm> bn = norm.as_branch_norm();
    if (!ctx.training || !bn || bn->type != BranchNorm::Type::group_norm1 || x.ndim() != 4 ||
        !ctx.exec.backend->folds_layer_scales())
      return Tensor();
    return op::pool_branch(ctx.exec, x, *bn, pool_size_, BranchScales{nullptr, &ls});
  }
  Tensor backward_scaled_branch(Ctx& ctx, const Tensor& x, Norm& norm, const Tensor& ls, const Tensor& dy,
                                Tensor* dls) override {
    const std::optional<BranchNorm> bn = norm.as_branch_norm();
    MF_CHECK(bn.has_value(), "{}: the folded branch's norm is gone", path());
    return op::pool_branch_backward(ctx.exec, x, *bn, pool_size_, ls, dy, grad_of(norm.weight()),
                                    grad_of(norm.bias()), dls);
  }
  // Linear in x: the backward needs nothing from the forward.
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    return op::pool_minus_input_backward(ctx.exec, dy, pool_size_);
  }

 private:
  int pool_size_;
};
}  // namespace

void register_pooling_mixer(MixerRegistry& r) {
  r.add({"pooling", "3x3 average pooling minus the input (PoolFormer)", [](const MixerContext& ctx) {
           MixerOptions o("pooling", ctx.options);
           const int64_t k = o.get_int("pool_size", 3);
           o.finish();
           MF_CHECK(k >= 1 && k % 2 == 1 && k <= 31, "pooling: pool_size must be odd and in 1..31, got {}", k);
           return std::make_unique<Pooling>(static_cast<int>(k));
         }});
}

}  // namespace mf
