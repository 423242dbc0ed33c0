// Which normalisation a layer uses; part of a model's description (see model/config.h).
#pragma once

#include <fmt/format.h>

#include <string>

namespace mf {

struct NormSpec {
  // "layer_norm" (over C) | "group_norm1" (over H·W·C) | "affine" | "rms_norm" (over C) | "batch_norm" (over B·H·W)
  std::string type = "layer_norm";
  double eps = 1e-6;
  bool bias = true;
  // batch_norm only: the running statistics' update factor (PyTorch's momentum; 0.1 by default);
  // negative stands for PyTorch's momentum=None, the cumulative average over the batches seen.
  double momentum = 0.1;
  std::string str() const {
    if (type == "batch_norm") return fmt::format("batch_norm eps={:g} momentum={:g}", eps, momentum);
    return fmt::format("{}{} eps={:g}", type, bias ? "" : "_nobias", eps);
  }
  bool operator==(const NormSpec&) const = default;
};

}  // namespace mf
