// A learnable per-channel scale (timm's Scale: parameter `scale`; LayerScale: parameter `gamma`).
// It has no forward of its own: blocks fold it into the residual add (op::scaled_residual).
#pragma once

#include "nn/module.h"

namespace mf {

class Scale : public Module {
 public:
  Scale(int64_t dim, float init_value, const std::string& param_name = "scale");
  std::string kind() const override { return param_name_ == "gamma" ? "LayerScale" : "Scale"; }
  std::string describe() const override;
  const Tensor& value() const { return param_->value; }
  Parameter* param() { return param_; }

 private:
  std::string param_name_;
  int64_t dim_;
  float init_;
  Parameter* param_;
};

}  // namespace mf
