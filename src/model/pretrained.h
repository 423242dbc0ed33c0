// timm's pretrained tags of the zoo models and their pretrained_cfg (the evaluation preprocessing and
// classifier size each checkpoint was made for). "caformer_s18.sail_in1k_384" names an architecture
// (caformer_s18) and a tag (sail_in1k_384); the hub repository is timm/<name>.<tag> (docs/hub.md).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "model/config.h"

namespace mf {

// "caformer_s18.sail_in1k" -> {"caformer_s18", "sail_in1k"}; "caformer_s18" -> {"caformer_s18", ""}.
std::pair<std::string, std::string> split_model_tag(const std::string& name_or_tag);

// The model's tags on the hub, timm's default first; empty when timm publishes no weights for it.
std::vector<std::string> pretrained_tags(const std::string& model);

// timm's default tag; one clear error when the model has no published weights.
std::string default_pretrained_tag(const std::string& model);

// Sets what the tag's checkpoint was made for: input size, crop, interpolation, mean/std and number
// of classes. An unknown tag is one error listing the model's tags.
void apply_pretrained_cfg(MetaFormerConfig& config, const std::string& model, const std::string& tag);

}  // namespace mf
