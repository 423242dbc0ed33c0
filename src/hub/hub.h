// Weights by name from the Hugging Face hub, in the hub's own cache layout, so that files timm or
// huggingface_hub downloaded are reused and the reverse (docs/hub.md).
#pragma once

#include <filesystem>
#include <string>

namespace mf::hub {

struct FetchOptions {
  bool progress = true;  // a progress bar on stderr while downloading (drawn only when stderr is a terminal)
  std::string revision = "main";  // a branch, tag or commit hash of the hub repository
};

// The file every timm repository on the hub holds.
inline constexpr const char* kWeightsFile = "model.safetensors";

// "caformer_s18" (the zoo's default pretrained tag is used) or "caformer_s18.sail_in1k" -> the hub
// repository "timm/caformer_s18.sail_in1k". Unknown models are one clear error.
std::string pretrained_repo(const std::string& model_name_or_tag);

// The local path of the model's model.safetensors: from the cache when present, otherwise
// downloaded into it (honours HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_ENDPOINT, HF_TOKEN).
// Failures throw mf::Error with one line naming the repository.
std::filesystem::path fetch_pretrained(const std::string& model_name_or_tag, const FetchOptions& options = {});

}  // namespace mf::hub
