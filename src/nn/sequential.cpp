#include "nn/sequential.h"

namespace mf {

Tensor Sequential::forward(Ctx& ctx, const Tensor& x) {
  Tensor y = x;
  for (auto& [name, child] : children()) y = child->run(ctx, y);
  return y;
}

}  // namespace mf

namespace mf {

Tensor Sequential::backward(Ctx& ctx, const Tensor& dy) {
  Tensor d = dy;
  for (auto it = children().rbegin(); it != children().rend(); ++it) d = it->second->backward(ctx, d);
  return d;
}

}  // namespace mf
