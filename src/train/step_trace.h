// A record of a training run, step by step, for replaying it in another framework: the weights
// before the first step and, for every optimizer step, its learning rate, its loss and the exact
// batch the model received (after augmentation). bench/loss_curve_vs_torch.py feeds it to PyTorch
// to check that the engine's loss curve follows PyTorch's from the same weights and the same data
// (`train --trace DIR`, docs/training.md).
//
// DIR/init.safetensors: the weights under timm's key names.
// DIR/steps.bin: the 8 bytes "MFTRACE1", then per step, little-endian:
//   int64 step; float64 lr; float64 loss; int64 B, H, W, C;
//   float32 images[B*H*W*C] (NHWC, normalised); int64 labels[B]
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/module.h"

namespace mf {

class StepTrace {
 public:
  // Creates DIR (it must not hold a trace already) and writes the weights `model` holds now.
  StepTrace(const std::string& dir, Module& model);
  void record(int64_t step, double lr, double loss, const Tensor& images, const std::vector<int64_t>& labels);

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace mf
