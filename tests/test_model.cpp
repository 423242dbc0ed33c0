// The model description: zoo parameter counts and key names against timm's, JSON configs, strict
// loading, the original sail-sg naming, and input checks.
#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "model/zoo.h"
#include "core/error.h"
#include "test_util.h"

namespace mf::test {
namespace {

struct Expected {
  const char* name;
  int64_t params;
  size_t tensors;
};

// Parameter and tensor counts of timm 1.0.29's state_dict() (spec section 9.1) and timm's
// published counts for the others (spec section 6).
TEST(Zoo, ParameterCountsEqualTimms) {
  for (const Expected& e : {Expected{"poolformer_s12", 11915176, 132}, Expected{"poolformerv2_s12", 11891712, 104},
                            Expected{"convformer_s18", 26774448, 242}, Expected{"caformer_s18", 26341656, 206}}) {
    MetaFormer m(zoo_config(e.name));
    EXPECT_EQ(m.num_parameters(), e.params) << e.name;
    EXPECT_EQ(m.named_parameters().size(), e.tensors) << e.name;
  }
  // timm's published counts in millions, two decimals.
  const std::vector<std::pair<const char*, double>> published{
      {"poolformer_s24", 21.39},   {"poolformer_s36", 30.86},   {"poolformer_m36", 56.17},
      {"poolformer_m48", 73.47},   {"poolformerv2_s24", 21.34}, {"poolformerv2_s36", 30.79},
      {"poolformerv2_m36", 56.08}, {"poolformerv2_m48", 73.35}, {"convformer_s36", 40.01},
      {"convformer_m36", 57.05},   {"convformer_b36", 99.88},   {"caformer_s36", 39.30},
      {"caformer_m36", 56.20},     {"caformer_b36", 98.75}};
  for (auto& [name, millions] : published) {
    MetaFormer m(zoo_config(name));
    EXPECT_NEAR(static_cast<double>(m.num_parameters()) / 1e6, millions, 0.006) << name;
  }
}

TEST(Zoo, KeyNamesAndShapesFollowTimm) {
  MetaFormer ca(zoo_config("caformer_s18"));
  std::map<std::string, Shape> keys;
  for (auto& [name, p] : ca.named_parameters()) keys[name] = p->value.shape();
  EXPECT_EQ(keys.at("stem.conv.weight"), (Shape{64, 3, 7, 7}));
  EXPECT_EQ(keys.at("stages.1.downsample.norm.weight"), (Shape{64}));
  EXPECT_EQ(keys.at("stages.0.blocks.0.token_mixer.pwconv1.weight"), (Shape{128, 64, 1, 1}));
  EXPECT_EQ(keys.at("stages.0.blocks.0.token_mixer.act1.scale"), (Shape{1}));
  EXPECT_EQ(keys.at("stages.0.blocks.0.token_mixer.dwconv.weight"), (Shape{128, 1, 7, 7}));
  EXPECT_EQ(keys.at("stages.2.blocks.0.token_mixer.qkv.weight"), (Shape{960, 320}));
  EXPECT_EQ(keys.at("stages.2.blocks.0.mlp.fc1.weight"), (Shape{1280, 320}));  // Linear in token stages
  EXPECT_EQ(keys.at("stages.1.blocks.0.mlp.fc1.weight"), (Shape{512, 128, 1, 1}));
  EXPECT_EQ(keys.at("stages.3.blocks.2.res_scale2.scale"), (Shape{512}));
  EXPECT_EQ(keys.at("head.fc.fc2.weight"), (Shape{1000, 2048}));
  EXPECT_EQ(keys.count("stages.0.blocks.0.res_scale1.scale"), 0u);
  EXPECT_EQ(keys.count("stem.conv.bias"), 1u);
  // Registration order is timm's state-dict order.
  auto named = ca.named_parameters();
  EXPECT_EQ(named.front().first, "stem.conv.weight");
  EXPECT_EQ(named.back().first, "head.fc.fc2.bias");

  MetaFormer p1(zoo_config("poolformer_s12"));
  std::map<std::string, Shape> k1;
  for (auto& [name, p] : p1.named_parameters()) k1[name] = p->value.shape();
  EXPECT_EQ(k1.at("stages.0.blocks.0.layer_scale1.scale"), (Shape{64}));
  EXPECT_EQ(k1.at("stages.0.blocks.0.norm1.bias"), (Shape{64}));
  EXPECT_EQ(k1.at("head.fc.weight"), (Shape{1000, 512}));
  EXPECT_EQ(k1.count("stem.norm.weight"), 0u);

  MetaFormer rf(zoo_config("randformer_s12"));
  std::map<std::string, Shape> kr;
  for (auto& [name, p] : rf.named_parameters()) kr[name] = p->value.shape();
  EXPECT_EQ(kr.at("stages.2.blocks.0.token_mixer.random_matrix"), (Shape{196, 196}));
  EXPECT_EQ(kr.at("stages.3.blocks.1.token_mixer.random_matrix"), (Shape{49, 49}));
  // The paper's "+0.2M" frozen parameters: 196²·6 + 49²·2.
  EXPECT_EQ(rf.num_parameters() - MetaFormer(zoo_config("identityformer_s12")).num_parameters(),
            196 * 196 * 6 + 49 * 49 * 2);
}

TEST(Zoo, UnknownNameSuggestsTheFamily) {
  try {
    zoo_config("convformer_s19");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("convformer_s18"), std::string::npos) << e.what();
  }
}

TEST(Config, JsonRoundTripsEveryZooModel) {
  for (auto& name : zoo_names()) {
    MetaFormerConfig c = zoo_config(name);
    MetaFormerConfig back = parse_config(config_to_json(c).dump(), name);
    EXPECT_TRUE(back == c) << name;
  }
}

TEST(Config, RejectsMistakesWithAClearMessage) {
  auto expect_error = [](const std::string& json, const std::string& phrase) {
    try {
      MetaFormer m(parse_config(json, "cfg.json"));
      FAIL() << "accepted: " << json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
    }
  };
  expect_error("{", "not valid JSON");
  expect_error("[1, 2]", "expected a JSON object");
  expect_error(R"({"depths": [1], "dims": [8]})", "'mixers' is required");
  expect_error(R"({"depths": [1, 1], "dims": [8], "mixers": "pooling"})", "'depths' has 2 entries");
  expect_error(R"({"depths": [1], "dims": [8], "mixers": "pooling", "typo": 1})", "unknown key 'typo'");
  expect_error(R"({"depths": [1], "dims": [8], "mixers": "poling"})", "unknown token mixer 'poling'");
  expect_error(R"({"depths": [1], "dims": [8], "mixers": ["pooling", "pooling"]})", "has 2 entries");
  expect_error(R"({"depths": [1], "dims": [-8], "mixers": "pooling"})", "out of range");
  expect_error(R"({"depths": [1], "dims": [8], "mixers": {"type": "sepconv", "kernel": 5}})", "no option 'kernel'");
  expect_error(R"({"depths": [1], "dims": [8], "mixers": "pooling", "norms": "instance_norm"})", "unknown norm");
  expect_error(R"({"depths": [1], "dims": [8], "mixers": "pooling", "mlp": {"act": "tanh"}})",
               "unknown activation 'tanh'");
  expect_error(std::string(100, '[') + std::string(100, ']'), "nested");
  // Found by fuzzing: a mean that overflows float used to serialise as null.
  expect_error(R"({"depths": [1], "dims": [8], "mixers": "pooling", "input": {"mean": [0, 1e300, 0]}})",
               "out of range");
  expect_error(R"({"depths": [1], "dims": [8], "mixers": "pooling", "input": {"std": [1, 0, 1]}})", "out of range");
  expect_error(R"({"depths": [1], "dims": [8], "mixers": "pooling", "res_scale_init": 1e30})", "out of range");
}

TEST(Config, CustomModelBuildsAndRuns) {
  MetaFormer m(parse_config(R"({"name": "tiny", "num_classes": 7, "depths": [1, 2], "dims": [8, 12],
      "mixers": [{"type": "sepconv", "kernel_size": 3}, "attention"], "head": {"type": "linear"}})",
                            "inline"));
  initialize_parameters(m, 3);
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  Tensor y = m.run(ctx, random_tensor({3, 32, 32, 3}, 1));
  EXPECT_EQ(y.shape(), (Shape{3, 7}));
}

TEST(Loader, ReportsEveryMissingUnexpectedAndMisShapedTensor) {
  TempDir dir;
  MetaFormer m(zoo_config("poolformerv2_s12"));
  std::vector<SafeTensorEntry> entries;
  for (auto& [name, p] : m.named_parameters()) {
    if (name == "stem.norm.weight") continue;  // missing
    Tensor t = p->value;
    if (name == "head.fc.weight") t = Tensor::zeros({10, 512});  // mis-shaped
    entries.push_back({name, t, {}, {}});
  }
  entries.push_back({"extra.weight", Tensor::zeros({3}), {}, {}});  // unexpected
  save_safetensors(dir.file("w.safetensors"), entries);
  try {
    load_weights(m, SafeTensors::open(dir.file("w.safetensors")));
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("1 missing (stem.norm.weight [64])"), std::string::npos) << msg;
    EXPECT_NE(msg.find("head.fc.weight (model [1000, 512], file [10, 512])"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1 unexpected (extra.weight [3])"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line";
  }
}

TEST(Loader, ReinitPrefixesSkipTheClassifier) {
  TempDir dir;
  MetaFormer m(zoo_config("poolformerv2_s12"));
  std::vector<SafeTensorEntry> entries;
  for (auto& [name, p] : m.named_parameters())
    entries.push_back({name, name.rfind("head.fc", 0) == 0 ? Tensor::zeros({10, 512}) : p->value, {}, {}});
  entries.pop_back();  // drop head.fc.bias
  save_safetensors(dir.file("w.safetensors"), entries);
  LoadOptions opts;
  opts.reinit_prefixes = {"head.fc."};
  LoadResult r = load_weights(m, SafeTensors::open(dir.file("w.safetensors")), opts);
  EXPECT_EQ(r.skipped.size(), 2u);
}

TEST(Loader, RenamesOriginalSailSgKeysLikeTimm) {
  // MetaFormer Baselines naming.
  EXPECT_EQ(original_to_timm_key("downsample_layers.0.proj.weight", false), "stem.conv.weight");
  EXPECT_EQ(original_to_timm_key("downsample_layers.0.post_norm.weight", false), "stem.norm.weight");
  EXPECT_EQ(original_to_timm_key("downsample_layers.2.pre_norm.weight", false), "stages.2.downsample.norm.weight");
  EXPECT_EQ(original_to_timm_key("downsample_layers.2.proj.bias", false), "stages.2.downsample.conv.bias");
  EXPECT_EQ(original_to_timm_key("stages.2.11.token_mixer.qkv.weight", false),
            "stages.2.blocks.11.token_mixer.qkv.weight");
  EXPECT_EQ(original_to_timm_key("stages.3.0.token_mixer.random_matrix", false),
            "stages.3.blocks.0.token_mixer.random_matrix");
  EXPECT_EQ(original_to_timm_key("norm.weight", false), "head.norm.weight");
  EXPECT_EQ(original_to_timm_key("head.fc1.weight", false), "head.fc.fc1.weight");
  EXPECT_EQ(original_to_timm_key("head.weight", false), "head.fc.weight");
  // PoolFormer v1 naming.
  EXPECT_EQ(original_to_timm_key("network.0.1.layer_scale_1", true), "stages.0.blocks.1.layer_scale1.scale");
  EXPECT_EQ(original_to_timm_key("network.1.proj.weight", true), "stages.1.downsample.conv.weight");
  EXPECT_EQ(original_to_timm_key("network.6.3.mlp.fc2.bias", true), "stages.3.blocks.3.mlp.fc2.bias");
  EXPECT_EQ(original_to_timm_key("patch_embed.proj.weight", true), "stem.conv.weight");
}

TEST(Loader, LoadsAnOriginalCheckpointWithLinearPointwiseWeights) {
  // Write convformer_s18 weights under the sail-sg names, with 2-D pointwise weights as the original
  // repository stores them, and load them back.
  TempDir dir;
  MetaFormer m(zoo_config("convformer_s18"));
  initialize_parameters(m, 9);
  std::map<std::string, std::string> inverse;
  std::vector<SafeTensorEntry> entries;
  int n = 0;
  for (auto& [name, p] : m.named_parameters()) {
    std::string k = name;
    auto rep = [&](const std::string& a, const std::string& b) {
      if (auto pos = k.find(a); pos != std::string::npos) k.replace(pos, a.size(), b);
    };
    rep("stem.conv", "downsample_layers.0.proj");
    rep("stem.norm", "downsample_layers.0.post_norm");
    for (int s = 1; s < 4; ++s) {
      rep("stages." + std::to_string(s) + ".downsample.conv", "downsample_layers." + std::to_string(s) + ".proj");
      rep("stages." + std::to_string(s) + ".downsample.norm", "downsample_layers." + std::to_string(s) + ".pre_norm");
    }
    rep(".blocks.", ".");
    rep("head.norm", "norm");
    rep("head.fc.", "head.");
    Tensor t = p->value;
    if (t.ndim() == 4 && t.dim(2) == 1) t = t.reshape({t.dim(0), t.dim(1)});
    entries.push_back({k, t, {}, {}});
    ++n;
  }
  save_safetensors(dir.file("orig.safetensors"), entries);
  MetaFormer back(zoo_config("convformer_s18"));
  LoadResult r = load_weights(back, SafeTensors::open(dir.file("orig.safetensors")));
  EXPECT_TRUE(r.renamed_from_original);
  EXPECT_EQ(r.loaded, n);
  auto a = m.named_parameters(), b = back.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(max_abs_diff(a[i].second->value, b[i].second->value), 0.0) << a[i].first;
}

TEST(Model, RejectsBadInputShapes) {
  MetaFormer m(zoo_config("poolformer_s12"));
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  EXPECT_THROW(m.forward_nchw(ctx, Tensor::zeros({3, 224, 224})), Error);     // rank 3
  EXPECT_THROW(m.forward_nchw(ctx, Tensor::zeros({1, 4, 64, 64})), Error);    // channels
  EXPECT_THROW(m.forward_nchw(ctx, Tensor::zeros({1, 3, 2, 2})), Error);      // smaller than the stem
  MetaFormer r(zoo_config("randformer_s12"));
  try {
    r.forward_nchw(ctx, Tensor::zeros({1, 3, 192, 192}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("196 tokens"), std::string::npos) << e.what();
  }
}

TEST(Model, AnyResolutionTheArchitectureAllows) {
  MetaFormer m(zoo_config("caformer_s18"));
  initialize_parameters(m, 1);
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  for (auto [h, w] : {std::pair{64, 64}, std::pair{77, 35}, std::pair{32, 160}}) {
    Tensor y = m.run(ctx, random_tensor({1, h, w, 3}, 2));
    EXPECT_EQ(y.shape(), (Shape{1, 1000}));
    for (float v : y.span()) ASSERT_TRUE(std::isfinite(v));
  }
}

}  // namespace
}  // namespace mf::test
