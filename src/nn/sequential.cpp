#include "nn/sequential.h"

namespace mf {

Tensor Sequential::forward(Ctx& ctx, const Tensor& x) {
  Tensor y = x;
  for (auto& [name, child] : children()) y = child->run(ctx, y);
  return y;
}

}  // namespace mf
