// Children named "0", "1", ... run in order (torch.nn.Sequential).
#pragma once

#include "nn/module.h"

namespace mf {

class Sequential : public Module {
 public:
  std::string kind() const override { return "Sequential"; }
  template <typename T>
  T* append(std::unique_ptr<T> m) {
    return add_child(std::to_string(children().size()), std::move(m));
  }
  size_t size() const { return children().size(); }
  Module& at(size_t i) const { return *children()[i].second; }
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  // Each child's input handed over to it: none is held here once the child has it.
  Tensor forward_owned(Ctx& ctx, Tensor x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
};

}  // namespace mf
