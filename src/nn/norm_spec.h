// Which normalisation a layer uses; part of a model's description (see model/config.h).
#pragma once

#include <fmt/format.h>

#include <string>

namespace mf {

struct NormSpec {
  std::string type = "layer_norm";  // "layer_norm" (over C) | "group_norm1" (over H·W·C) | "affine" | "rms_norm" (over C)
  double eps = 1e-6;
  bool bias = true;
  std::string str() const { return fmt::format("{}{} eps={:g}", type, bias ? "" : "_nobias", eps); }
  bool operator==(const NormSpec&) const = default;
};

}  // namespace mf
