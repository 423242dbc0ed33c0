#include "model/patchtsmixer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
#include <regex>
#include <set>

#include "core/error.h"
#include "model/metaformer.h"

namespace mf {

namespace {
using nlohmann::json;

template <typename T>
T field(const json& hf, const char* key, T fallback) {
  const auto it = hf.find(key);
  return it == hf.end() || it->is_null() ? fallback : it->get<T>();
}
}  // namespace

MetaFormerConfig patchtsmixer_config(const json& hf, bool classification) {
  const std::string mode = field<std::string>(hf, "mode", "common_channel");
  MF_CHECK(mode == "common_channel", "PatchTSMixer mode '{}' is not supported (only common_channel: independent "
           "channels)", mode);
  MF_CHECK(!field<bool>(hf, "self_attn", false), "PatchTSMixer's self_attn is not supported");
  MF_CHECK(!field<bool>(hf, "use_positional_encoding", false), "PatchTSMixer's positional encoding is not supported");
  const bool gated = field<bool>(hf, "gated_attn", true);
  const double ratio = field<double>(hf, "expansion_factor", 2.0);
  const std::string norm_mlp = field<std::string>(hf, "norm_mlp", "LayerNorm");
  const double eps = field<double>(hf, "norm_eps", 1e-5);
  std::string scaling = "none";
  if (const auto it = hf.find("scaling"); it != hf.end() && !it->is_null()) {
    if (it->is_boolean()) {
      scaling = it->get<bool>() ? "std" : "none";
    } else {
      MF_CHECK(it->is_string() && it->get<std::string>() == "std", "PatchTSMixer scaling {} is not supported (std, "
               "true, false or null)", it->dump());
      scaling = "std";
    }
  }
  json head;
  int num_classes = 1;
  if (classification) {
    const std::string agg = field<std::string>(hf, "head_aggregation", "max_pool");
    MF_CHECK(agg == "avg_pool", "PatchTSMixer head_aggregation '{}' is not supported (avg_pool)", agg);
    MF_CHECK(scaling == "none", "a PatchTSMixer classifier with scaling (its InjectScalerStatistics4D) is not supported");
    MF_CHECK(!hf.contains("output_range") || hf["output_range"].is_null(), "PatchTSMixer's output_range is not supported");
    head = {{"type", "channel_mean_linear"}};
    num_classes = field<int>(hf, "num_targets", 3);
  } else {
    MF_CHECK(!hf.contains("prediction_channel_indices") || hf["prediction_channel_indices"].is_null(),
             "PatchTSMixer's prediction_channel_indices is not supported");
    head = {{"type", "forecast"}, {"horizon", field<int>(hf, "prediction_length", 16)}};
  }
  const json norm = norm_mlp.find("atch") != std::string::npos
                        ? json{{"type", "batch_norm"}, {"eps", eps}}
                        : json{{"type", "layer_norm"}, {"eps", eps}};
  const json c{{"name", classification ? "patchtsmixer_classifier" : "patchtsmixer_forecaster"},
               {"in_chans", field<int>(hf, "num_input_channels", 1)},
               {"num_classes", num_classes},
               {"depths", {field<int>(hf, "num_layers", 3)}},
               {"dims", {field<int>(hf, "d_model", 8)}},
               {"layout", "isotropic"},
               {"mixers", {{"type", gated ? "gated_time_mlp" : "time_mlp"}, {"ratio", ratio}}},
               {"norms", norm},
               {"mlp", {{"act", "gelu"}, {"bias", true}, {"ratio", ratio}, {"gate", gated}}},
               {"head", head},
               {"sequence",
                {{"input", "series"},
                 {"length", field<int>(hf, "context_length", 32)},
                 {"patch_size", field<int>(hf, "patch_length", 8)},
                 {"patch_stride", field<int>(hf, "patch_stride", 8)},
                 {"channels", "independent"},
                 {"scaling", scaling}}}};
  return parse_config(c.dump(), "PatchTSMixer config");
}

std::string patchtsmixer_key(const std::string& k) {
  static const std::regex layer(R"(model\.encoder\.mlp_mixer_encoder\.mixers\.(\d+)\.(patch_mixer|feature_mixer)\.(.*))");
  if (k.rfind("model.encoder.patcher.", 0) == 0) return "stem.proj." + k.substr(22);
  if (k.rfind("head.base_forecast_block.", 0) == 0) return "head." + k.substr(25);
  if (k.rfind("head.projection.", 0) == 0) return "head." + k.substr(16);
  std::smatch m;
  if (!std::regex_match(k, m, layer)) return "";
  const std::string block = "blocks." + m[1].str() + ".";
  const bool patch = m[2] == "patch_mixer";
  std::string rest = m[3];
  // norm.norm.{weight,bias} (LayerNorm) or norm.norm.batchnorm.{...} (BatchNorm)
  for (const char* p : {"norm.norm.batchnorm.", "norm.norm."})
    if (rest.rfind(p, 0) == 0) return block + (patch ? "norm1." : "norm2.") + rest.substr(std::string(p).size());
  const std::string owner = patch ? "token_mixer." : "mlp.";
  if (rest.rfind("mlp.", 0) == 0) return block + owner + rest.substr(4);
  if (rest.rfind("gating_block.attn_layer.", 0) == 0) return block + owner + "gate." + rest.substr(24);
  return "";
}

int load_patchtsmixer(MetaFormer& model, const SafeTensors& file) {
  std::map<std::string, std::string> source;  // engine key -> transformers key
  std::vector<std::string> unexpected, missing, mis_shaped;
  for (const std::string& k : file.names()) {
    const std::string e = patchtsmixer_key(k);
    if (e.empty())
      unexpected.push_back(k);
    else
      source[e] = k;
  }
  int loaded = 0;
  for (auto& [name, p] : model.named_parameters()) {
    const auto it = source.find(name);
    if (it == source.end()) {
      missing.push_back(name);
      continue;
    }
    const Tensor t = file.load(it->second);
    // The engine keeps MetaFormer's 1×1-conv shape [out, in, 1, 1] for the MLP: same elements.
    if (t.numel() != p->value.numel() ||
        (t.shape() != p->value.shape() && !(p->value.ndim() == 4 && t.ndim() == 2))) {
      mis_shaped.push_back(fmt::format("{} (model {}, file {})", it->second, p->value.shape().str(), t.shape().str()));
      continue;
    }
    p->value.copy_from(t.reshape(p->value.shape()));
    source.erase(it);
    ++loaded;
  }
  for (const auto& [e, k] : source) unexpected.push_back(k);
  const auto list = [](const std::vector<std::string>& v) { return fmt::format("{}", fmt::join(v, ", ")); };
  MF_CHECK(missing.empty() && mis_shaped.empty() && unexpected.empty(),
           "{}: not a PatchTSMixer state dict for this model: {} missing ({}), {} mis-shaped ({}), {} unexpected ({})",
           file.what(), missing.size(), list(missing), mis_shaped.size(), list(mis_shaped), unexpected.size(),
           list(unexpected));
  return loaded;
}

}  // namespace mf
