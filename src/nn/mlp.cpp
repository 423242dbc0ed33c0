#include "nn/mlp.h"

namespace mf {

Mlp::Mlp(int64_t dim, int64_t hidden, const std::string& act, bool bias, bool conv1x1) {
  fc1_ = add_child("fc1", std::make_unique<Linear>(dim, hidden, bias, conv1x1));
  act_ = add_child("act", make_activation(act));
  fc2_ = add_child("fc2", std::make_unique<Linear>(hidden, dim, bias, conv1x1));
}

Tensor Mlp::forward(Ctx& ctx, const Tensor& x) {
  Tensor h = fc1_->run(ctx, x);
  act_->apply_(ctx, h);
  return fc2_->run(ctx, h);
}

Tensor Mlp::backward(Ctx& ctx, const Tensor& dy) {
  return fc1_->backward(ctx, act_->backward(ctx, fc2_->backward(ctx, dy)));
}

}  // namespace mf
