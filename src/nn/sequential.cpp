#include "nn/sequential.h"

namespace mf {

Tensor Sequential::forward(Ctx& ctx, const Tensor& x) {
  Tensor y = x;
  for (auto& [name, child] : children()) y = child->run(ctx, y);
  return y;
}

Tensor Sequential::forward_owned(Ctx& ctx, Tensor x) {
  for (auto& [name, child] : children()) x = child->run_owned(ctx, std::move(x));
  return x;
}

}  // namespace mf

namespace mf {

Tensor Sequential::backward(Ctx& ctx, const Tensor& dy) {
  Tensor d = dy;
  for (auto it = children().rbegin(); it != children().rend(); ++it) {
    d = it->second->backward(ctx, d);
    if (ctx.on_backward_done) ctx.on_backward_done(*it->second);
  }
  return d;
}

}  // namespace mf
