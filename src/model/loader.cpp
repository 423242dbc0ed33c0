#include "model/loader.h"

#include <algorithm>
#include <map>
#include <regex>

#include "core/error.h"
#include "model/metaformer.h"

namespace mf {

std::string original_to_timm_key(const std::string& key, bool original_poolformer) {
  auto replace_all = [](std::string s, const std::string& from, const std::string& to) {
    for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
    return s;
  };
  std::string k = key;
  if (original_poolformer) {
    k = std::regex_replace(k, std::regex(R"(layer_scale_([0-9]+))"), "layer_scale$1.scale");
    // The original network list interleaves stages (0, 2, 4, 6) and downsamplings (1, 3, 5).
    k = replace_all(k, "network.1", "downsample_layers.1");
    k = replace_all(k, "network.3", "downsample_layers.2");
    k = replace_all(k, "network.5", "downsample_layers.3");
    k = replace_all(k, "network.2", "network.1");
    k = replace_all(k, "network.4", "network.2");
    k = replace_all(k, "network.6", "network.3");
    k = replace_all(k, "network", "stages");
  }
  // The patterns use '.' unescaped, exactly as timm's filter does.
  k = std::regex_replace(k, std::regex(R"(downsample_layers.([0-9]+))"), "stages.$1.downsample");
  k = replace_all(k, "downsample.proj", "downsample.conv");
  k = replace_all(k, "patch_embed.proj", "patch_embed.conv");
  k = std::regex_replace(k, std::regex(R"(([0-9]+).([0-9]+))"), "$1.blocks.$2");
  k = replace_all(k, "stages.0.downsample", "patch_embed");
  k = replace_all(k, "patch_embed", "stem");
  k = replace_all(k, "post_norm", "norm");
  k = replace_all(k, "pre_norm", "norm");
  k = std::regex_replace(k, std::regex(R"(^head)"), "head.fc");
  k = std::regex_replace(k, std::regex(R"(^norm)"), "head.norm");
  return k;
}

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

std::string list(const std::vector<std::string>& items) {
  constexpr size_t kMax = 12;
  std::string s;
  for (size_t i = 0; i < items.size() && i < kMax; ++i) s += (i ? ", " : "") + items[i];
  if (items.size() > kMax) s += fmt::format(", and {} more", items.size() - kMax);
  return s;
}

}  // namespace

int checkpoint_num_classes(const SafeTensors& file) {
  for (const char* key : {"head.fc.fc2.weight", "head.fc.weight", "head.fc2.weight", "head.weight"})
    if (file.contains(key)) {
      const auto& info = file.info(key);
      if (info.shape.ndim() == 2) return static_cast<int>(info.shape[0]);
    }
  return 0;
}

namespace {
// The convolution that reads the image: MetaFormer's, MambaOut's and MLP-Mixer's stems.
bool is_input_conv(const std::string& name) {
  return name == "stem.conv.weight" || name == "stem.conv1.weight" || name == "stem.proj.weight";
}
}  // namespace

LoadResult load_weights(Module& model, const SafeTensors& file, const LoadOptions& options) {
  LoadResult result;
  // Original sail-sg checkpoints lack timm's stem key; rename theirs (timm's checkpoint_filter_fn).
  std::map<std::string, std::string> file_key_of;  // timm key -> key in the file
  // A model whose own keys are named that way (CAS-ViT's network.{i}.{b}) loads its file as it is.
  bool model_uses_original_names = false;
  for (auto& [name, param] : model.named_parameters())
    model_uses_original_names |= name == "network.0.0.mlp.fc1.weight" || name == "downsample_layers.0.proj.weight";
  const bool original_poolformer = file.contains("network.0.0.mlp.fc1.weight");
  const bool rename = !model_uses_original_names && !file.contains("stem.conv.weight") &&
                      (original_poolformer || file.contains("downsample_layers.0.proj.weight"));
  for (const auto& name : file.names()) file_key_of[rename ? original_to_timm_key(name, original_poolformer) : name] = name;
  result.renamed_from_original = rename;

  std::vector<std::string> missing, mis_shaped, unexpected;
  std::set<std::string> used;
  auto reinit = [&](const std::string& name) {
    for (auto& p : options.reinit_prefixes)
      if (starts_with(name, p)) return true;
    return false;
  };
  for (auto& [name, param] : model.named_parameters()) {
    auto it = file_key_of.find(name);
    const Shape& want = param->value.shape();
    if (it == file_key_of.end()) {
      if (reinit(name)) {
        result.skipped.push_back(name);
        continue;
      }
      missing.push_back(fmt::format("{} {}", name, want.str()));
      continue;
    }
    used.insert(it->first);
    const SafeTensorInfo& info = file.info(it->second);
    // Original checkpoints store 1×1 convolutions as Linear weights: same elements, other shape.
    const bool same = info.shape == want || (result.renamed_from_original && info.shape.numel() == want.numel());
    const bool adaptable = options.adapt_input_channels && is_input_conv(name) && want.ndim() == 4 &&
                           info.shape.ndim() == 4 && want[1] == 1 && info.shape[0] == want[0] &&
                           info.shape[2] == want[2] && info.shape[3] == want[3];
    if (!same && adaptable) {
      result.notes.push_back(fmt::format("{}: summed the checkpoint's {} input channels into 1", name, info.shape[1]));
      continue;
    }
    if (!same) {
      if (reinit(name)) {
        result.skipped.push_back(name);
        continue;
      }
      mis_shaped.push_back(fmt::format("{} (model {}, file {})", name, want.str(), info.shape.str()));
      continue;
    }
  }
  for (auto& [k, original] : file_key_of)
    if (!used.count(k) && !reinit(k)) unexpected.push_back(fmt::format("{} {}", original, file.info(original).shape.str()));

  if (!missing.empty() || !mis_shaped.empty() || !unexpected.empty()) {
    std::string msg = fmt::format("weights {} do not fit the model:", file.what());
    if (!missing.empty()) msg += fmt::format(" {} missing ({});", missing.size(), list(missing));
    if (!mis_shaped.empty()) msg += fmt::format(" {} mis-shaped ({});", mis_shaped.size(), list(mis_shaped));
    if (!unexpected.empty()) msg += fmt::format(" {} unexpected ({});", unexpected.size(), list(unexpected));
    msg.pop_back();
    throw Error(msg);
  }

  for (auto& [name, param] : model.named_parameters()) {
    if (std::find(result.skipped.begin(), result.skipped.end(), name) != result.skipped.end()) continue;
    Tensor t;
    if (param->integer && file.info(file_key_of.at(name)).dtype[0] != 'F' &&
        file.info(file_key_of.at(name)).dtype != "BF16") {  // PyTorch's I64 num_batches_tracked
      const std::vector<int64_t> ints = file.load_int(file_key_of.at(name));
      t = Tensor::zeros(param->value.shape());
      for (size_t i = 0; i < ints.size(); ++i) t.data()[i] = static_cast<float>(ints[i]);
    } else {
      t = file.load(file_key_of.at(name));
    }
    if (t.shape() != param->value.shape() && options.adapt_input_channels && is_input_conv(name) &&
        t.ndim() == 4 && t.dim(1) != 1 && param->value.dim(1) == 1) {
      const int64_t out = t.dim(0), in = t.dim(1), taps = t.dim(2) * t.dim(3);
      Tensor summed = Tensor::zeros(param->value.shape());
      for (int64_t o = 0; o < out; ++o)
        for (int64_t c = 0; c < in; ++c)
          for (int64_t k = 0; k < taps; ++k) summed.data()[o * taps + k] += t.data()[(o * in + c) * taps + k];
      t = summed;
    }
    param->value.copy_from(t);
    param->value.bump_version();
    ++result.loaded;
  }
  return result;
}

void save_weights(Module& model, const std::string& path, const std::map<std::string, std::string>& metadata) {
  std::vector<SafeTensorEntry> entries;
  for (auto& [name, param] : model.named_parameters()) {
    const Tensor host = param->value.to(Device::CPU);  // a GPU run's weights: a copy; on the CPU, itself
    if (param->integer) {  // as PyTorch stores it: I64
      std::vector<int64_t> ints;
      for (float f : host.span()) ints.push_back(static_cast<int64_t>(f));
      entries.push_back({name, Tensor(), ints, host.shape()});
    } else {
      entries.push_back({name, host, {}, {}});
    }
  }
  save_safetensors(path, entries, metadata);
}

std::unique_ptr<MetaFormer> build_model(MetaFormerConfig config, const std::string& weights, uint64_t seed,
                                        bool keep_num_classes) {
  if (weights.empty()) {
    auto model = std::make_unique<MetaFormer>(config);
    initialize_parameters(*model, seed);
    return model;
  }
  SafeTensors file = SafeTensors::open(weights);
  const int classes = checkpoint_num_classes(file);
  if (!keep_num_classes && classes > 0) config.num_classes = classes;
  auto model = std::make_unique<MetaFormer>(config);
  load_weights(*model, file);
  return model;
}

}  // namespace mf
