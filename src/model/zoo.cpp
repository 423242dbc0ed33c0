#include "model/zoo.h"

#include <algorithm>
#include <map>

#include "core/error.h"

namespace mf {

namespace {

struct Size {
  std::vector<int> depths;
  std::vector<int> dims;
};

const std::vector<int> kS{64, 128, 320, 512};      // PoolFormer / ConvFormer / CAFormer "s"
const std::vector<int> kPoolM{96, 192, 384, 768};  // PoolFormer "m"
const std::vector<int> kM{96, 192, 384, 576};      // ConvFormer / CAFormer "m"
const std::vector<int> kB{128, 256, 512, 768};     // ConvFormer / CAFormer "b"

std::vector<MixerSpec> mixers(std::initializer_list<const char*> names) {
  std::vector<MixerSpec> out;
  for (const char* n : names) out.push_back({n, nlohmann::json::object()});
  return out;
}

// Defaults of timm's MetaFormer class (PoolFormerV2 / ConvFormer / CAFormer / the Baselines paper).
MetaFormerConfig baseline(const std::string& name, const Size& size) {
  MetaFormerConfig c;
  c.name = name;
  c.depths = size.depths;
  c.dims = size.dims;
  c.norms.assign(4, norm_from_name("layer_norm_nobias"));
  c.mlp_act = "starrelu";
  c.mlp_bias = false;
  c.layer_scale_init.assign(4, std::nullopt);
  c.res_scale_init = {std::nullopt, std::nullopt, 1.0, 1.0};
  c.stem = {7, 4, 2, norm_from_name("layer_norm_nobias")};
  c.downsample = {3, 2, 1, norm_from_name("layer_norm_nobias")};
  c.head.type = "mlp";
  return c;
}

MetaFormerConfig poolformer_v1(const std::string& name, const Size& size, double ls, double crop) {
  MetaFormerConfig c = baseline(name, size);
  c.mixers = mixers({"pooling", "pooling", "pooling", "pooling"});
  c.norms.assign(4, norm_from_name("group_norm1"));
  c.mlp_act = "gelu";
  c.mlp_bias = true;
  c.layer_scale_init.assign(4, ls);
  c.res_scale_init.assign(4, std::nullopt);
  c.stem.norm.reset();
  c.downsample.norm.reset();
  c.head.type = "linear";
  c.input.crop_pct = crop;
  return c;
}

MetaFormerConfig with_group_norm_linear_head(MetaFormerConfig c, std::vector<MixerSpec> m) {
  c.mixers = std::move(m);
  c.norms.assign(4, norm_from_name("group_norm1_nobias"));
  c.head.type = "linear";
  return c;
}

const std::map<std::string, MetaFormerConfig>& zoo() {
  static const std::map<std::string, MetaFormerConfig> z = [] {
    std::map<std::string, MetaFormerConfig> m;
    auto add = [&](MetaFormerConfig c) { m.emplace(c.name, std::move(c)); };
    const std::vector<std::pair<std::string, Size>> pool_sizes{{"s12", {{2, 2, 6, 2}, kS}},
                                                               {"s24", {{4, 4, 12, 4}, kS}},
                                                               {"s36", {{6, 6, 18, 6}, kS}},
                                                               {"m36", {{6, 6, 18, 6}, kPoolM}},
                                                               {"m48", {{8, 8, 24, 8}, kPoolM}}};
    for (auto& [tag, size] : pool_sizes) {
      const bool small = tag[0] == 's';
      const double ls = (tag == "s12" || tag == "s24") ? 1e-5 : 1e-6;
      add(poolformer_v1("poolformer_" + tag, size, ls, small ? 0.9 : 0.95));
      add(with_group_norm_linear_head(baseline("poolformerv2_" + tag, size),
                                      mixers({"pooling", "pooling", "pooling", "pooling"})));
      add(with_group_norm_linear_head(baseline("identityformer_" + tag, size),
                                      mixers({"identity", "identity", "identity", "identity"})));
      add(with_group_norm_linear_head(baseline("randformer_" + tag, size),
                                      mixers({"identity", "identity", "random", "random"})));
    }
    const std::vector<std::pair<std::string, Size>> conv_sizes{{"s18", {{3, 3, 9, 3}, kS}},
                                                               {"s36", {{3, 12, 18, 3}, kS}},
                                                               {"m36", {{3, 12, 18, 3}, kM}},
                                                               {"b36", {{3, 12, 18, 3}, kB}}};
    for (auto& [tag, size] : conv_sizes) {
      MetaFormerConfig conv = baseline("convformer_" + tag, size);
      conv.mixers = mixers({"sepconv", "sepconv", "sepconv", "sepconv"});
      add(conv);
      MetaFormerConfig ca = baseline("caformer_" + tag, size);
      ca.mixers = mixers({"sepconv", "sepconv", "attention", "attention"});
      add(ca);
    }
    return m;
  }();
  return z;
}

}  // namespace

std::vector<std::string> zoo_names() {
  std::vector<std::string> names;
  for (auto& [name, c] : zoo()) names.push_back(name);
  return names;
}

bool zoo_has(const std::string& name) { return zoo().count(name) != 0; }

MetaFormerConfig zoo_config(const std::string& name) {
  auto it = zoo().find(name);
  if (it != zoo().end()) return it->second;
  // Suggest names sharing the family prefix ("convformer_s19" -> convformer_*).
  const std::string family = name.substr(0, name.find('_'));
  std::string similar;
  for (auto& [n, c] : zoo())
    if (n.rfind(family, 0) == 0) similar += (similar.empty() ? "" : ", ") + n;
  if (similar.empty())
    fail("unknown model '{}' (see `metaformer info --list`)", name);
  fail("unknown model '{}' (did you mean one of: {}?)", name, similar);
}

}  // namespace mf
