// An exponential moving average of the model's weights (timm's ModelEmaV2):
// ema = decay · ema + (1 - decay) · weight after every optimizer step, for every parameter
// (frozen ones included, so that the EMA is a complete state dict).
#pragma once

#include <string>
#include <vector>

#include "io/safetensors.h"
#include "nn/module.h"

namespace mf {

class ModelEma {
 public:
  ModelEma(Module& model, double decay);
  void update();
  double decay() const { return decay_; }
  // Copies the averaged weights into another model of the same description.
  void copy_to(Module& other) const;
  std::vector<SafeTensorEntry> entries() const;  // timm key names
  void load(const SafeTensors& file);

 private:
  double decay_;
  std::vector<std::pair<std::string, Parameter*>> params_;
  std::vector<Tensor> shadow_;
};

}  // namespace mf
