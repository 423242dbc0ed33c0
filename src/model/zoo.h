// The built-in model zoo, under timm's names (and the MetaFormer Baselines paper's names for
// IdentityFormer and RandFormer, which timm does not define).
#pragma once

#include <string>
#include <vector>

#include "model/config.h"

namespace mf {

std::vector<std::string> zoo_names();
bool zoo_has(const std::string& name);
// Throws mf::Error listing close names when `name` is unknown. "NAME.TAG" (timm's pretrained tags,
// model/pretrained.h) is the architecture NAME with that checkpoint's input size, preprocessing and
// number of classes.
MetaFormerConfig zoo_config(const std::string& name_or_tag);

}  // namespace mf
