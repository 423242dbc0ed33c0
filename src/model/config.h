// The description of a MetaFormer: the single source from which the module tree (and so every
// parameter name and shape) is built. Zoo models are descriptions written in C++ (zoo.cpp); users
// write the same description as JSON (docs/config.md) and build new models without recompiling.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "nn/norm_spec.h"

namespace mf {

struct MixerSpec {
  std::string type;                                      // a registered mixer name
  nlohmann::json options = nlohmann::json::object();     // mixer-specific options
  bool operator==(const MixerSpec&) const = default;
};

struct ConvSpec {
  int kernel_size = 3, stride = 2, padding = 1;
  std::optional<NormSpec> norm;  // stem: after the conv; downsampling: before it
  bool operator==(const ConvSpec&) const = default;
};

struct HeadSpec {
  std::string type = "mlp";  // "linear": fc; "mlp": fc1 -> act -> norm -> fc2 (timm's MlpHead)
  NormSpec norm{"layer_norm", 1e-6, true};      // after global pooling
  double mlp_ratio = 4.0;
  std::string act = "squared_relu";
  NormSpec mlp_norm{"layer_norm", 1e-6, true};
  bool operator==(const HeadSpec&) const = default;
};

// Evaluation preprocessing (timm's pretrained_cfg).
struct InputSpec {
  int size = 224;
  double crop_pct = 1.0;
  std::string interpolation = "bicubic";
  std::string crop_mode = "center";
  std::vector<float> mean{0.485f, 0.456f, 0.406f};  // one per input channel
  std::vector<float> std{0.229f, 0.224f, 0.225f};
  bool operator==(const InputSpec&) const = default;
};

struct MetaFormerConfig {
  std::string name = "custom";
  int in_chans = 3;
  int num_classes = 1000;
  std::vector<int> depths;
  std::vector<int> dims;
  std::vector<MixerSpec> mixers;   // one per stage
  std::vector<NormSpec> norms;     // block norms, one per stage
  std::string mlp_act = "starrelu";
  bool mlp_bias = false;
  double mlp_ratio = 4.0;
  std::vector<std::optional<double>> layer_scale_init;  // per stage; empty optional = no layer scale
  std::vector<std::optional<double>> res_scale_init;    // per stage; empty optional = no res scale
  ConvSpec stem{7, 4, 2, std::nullopt};
  ConvSpec downsample{3, 2, 1, std::nullopt};
  HeadSpec head;
  InputSpec input;
  double drop_path_rate = 0.0;  // training only

  size_t num_stages() const { return depths.size(); }
  // Throws mf::Error describing the first inconsistency.
  void validate() const;
  bool operator==(const MetaFormerConfig&) const = default;
};

// Parses and validates a JSON model description. `what` names the source in error messages.
MetaFormerConfig parse_config(const std::string& json_text, const std::string& what);
MetaFormerConfig load_config(const std::string& path);
nlohmann::json config_to_json(const MetaFormerConfig& c);

// "layer_norm", "layer_norm_nobias", "group_norm1", "group_norm1_nobias" with timm's eps.
NormSpec norm_from_name(const std::string& name);

}  // namespace mf
