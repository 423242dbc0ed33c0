// The token-mixer families beyond metaformer.py: MambaOut's and mlp_mixer.py's key names and shapes
// (timm's), parameter counts, the fixed token grids of the spatial MLPs, and a short training run on
// Fashion-MNIST for every mixer of these families inside an ordinary MetaFormer.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "data/dataset.h"
#include "model/metaformer.h"
#include "model/zoo.h"
#include "test_util.h"

namespace mf::test {
namespace {

namespace fs = std::filesystem;

std::map<std::string, Shape> keys_of(const std::string& model) {
  MetaFormer m(zoo_config(model));
  std::map<std::string, Shape> keys;
  for (auto& [name, p] : m.named_parameters()) keys[name] = p->value.shape();
  return keys;
}

// Spec section 9.2 (timm 1.0.29's state_dict() of mambaout_femto).
TEST(ZooMixers, MambaOutFemtoKeysAreTimms) {
  MetaFormer m(zoo_config("mambaout_femto"));
  EXPECT_EQ(m.num_parameters(), 7304536);
  EXPECT_EQ(m.named_parameters().size(), 172u);
  auto k = keys_of("mambaout_femto");
  EXPECT_EQ(k.at("stem.conv1.weight"), (Shape{24, 3, 3, 3}));
  EXPECT_EQ(k.at("stem.norm1.weight"), (Shape{24}));
  EXPECT_EQ(k.at("stem.conv2.weight"), (Shape{48, 24, 3, 3}));
  EXPECT_EQ(k.at("stem.norm2.bias"), (Shape{48}));
  EXPECT_EQ(k.at("stages.0.blocks.0.norm.weight"), (Shape{48}));
  EXPECT_EQ(k.at("stages.0.blocks.0.fc1.weight"), (Shape{256, 48}));
  EXPECT_EQ(k.at("stages.0.blocks.0.conv.weight"), (Shape{48, 1, 7, 7}));
  EXPECT_EQ(k.at("stages.0.blocks.0.fc2.weight"), (Shape{48, 128}));
  EXPECT_EQ(k.at("stages.2.blocks.8.fc1.weight"), (Shape{1024, 192}));
  EXPECT_EQ(k.at("stages.3.blocks.0.fc2.weight"), (Shape{288, 768}));
  EXPECT_EQ(k.at("stages.1.downsample.conv.weight"), (Shape{96, 48, 3, 3}));
  EXPECT_EQ(k.at("stages.1.downsample.norm.weight"), (Shape{96}));  // 'conv': normalises the output
  EXPECT_EQ(k.at("head.norm.weight"), (Shape{288}));
  EXPECT_EQ(k.at("head.pre_logits.fc.weight"), (Shape{1152, 288}));
  EXPECT_EQ(k.at("head.pre_logits.norm.weight"), (Shape{1152}));
  EXPECT_EQ(k.at("head.fc.weight"), (Shape{1000, 1152}));
  EXPECT_EQ(k.count("stages.0.downsample.conv.weight"), 0u);
  EXPECT_EQ(k.count("stages.0.blocks.0.ls.gamma"), 0u);
}

TEST(ZooMixers, MambaOutRwVariantsDifferWhereTimmsDo) {
  auto k = keys_of("mambaout_small_rw");
  EXPECT_EQ(k.count("stem.norm1.weight"), 0u);                      // no stem mid-norm
  EXPECT_EQ(k.at("stages.1.downsample.norm.weight"), (Shape{96}));  // 'conv_nf': normalises the input
  EXPECT_EQ(k.at("stages.0.blocks.0.ls.gamma"), (Shape{96}));
  EXPECT_EQ(k.at("head.pre_logits.fc.weight"), (Shape{2304, 576}));
  EXPECT_EQ(k.count("head.pre_logits.norm.weight"), 0u);  // norm_mlp head
  auto wide = keys_of("mambaout_base_wide_rw");            // expansion 3, conv_ratio 1.5
  EXPECT_EQ(wide.at("stages.0.blocks.0.fc1.weight"), (Shape{768, 128}));
  EXPECT_EQ(wide.at("stages.0.blocks.0.conv.weight"), (Shape{192, 1, 7, 7}));
  EXPECT_EQ(keys_of("mambaout_base").at("stages.0.blocks.0.fc1.weight"), (Shape{682, 128}));  // int(8/3·128) = 341
}

TEST(ZooMixers, MlpMixerFamilyKeysAreTimms) {
  auto mixer = keys_of("mixer_s16_224");
  EXPECT_EQ(mixer.at("stem.proj.weight"), (Shape{512, 3, 16, 16}));
  EXPECT_EQ(mixer.at("blocks.0.norm1.weight"), (Shape{512}));
  EXPECT_EQ(mixer.at("blocks.0.mlp_tokens.fc1.weight"), (Shape{256, 196}));
  EXPECT_EQ(mixer.at("blocks.0.mlp_tokens.fc2.weight"), (Shape{196, 256}));
  EXPECT_EQ(mixer.at("blocks.7.mlp_channels.fc1.weight"), (Shape{2048, 512}));
  EXPECT_EQ(mixer.at("norm.weight"), (Shape{512}));
  EXPECT_EQ(mixer.at("head.weight"), (Shape{1000, 512}));
  auto gmixer = keys_of("gmixer_12_224");
  EXPECT_EQ(gmixer.at("blocks.0.mlp_tokens.fc1.weight"), (Shape{384, 196}));
  EXPECT_EQ(gmixer.at("blocks.0.mlp_tokens.fc2.weight"), (Shape{196, 192}));
  EXPECT_EQ(gmixer.at("blocks.0.mlp_channels.fc2.weight"), (Shape{384, 768}));
  auto resmlp = keys_of("resmlp_12_224");
  EXPECT_EQ(resmlp.at("blocks.0.norm1.alpha"), (Shape{1, 1, 384}));
  EXPECT_EQ(resmlp.at("blocks.0.linear_tokens.weight"), (Shape{196, 196}));
  EXPECT_EQ(resmlp.at("blocks.0.linear_tokens.bias"), (Shape{196}));
  EXPECT_EQ(resmlp.at("blocks.0.ls1"), (Shape{384}));
  EXPECT_EQ(resmlp.at("blocks.0.ls2"), (Shape{384}));
  EXPECT_EQ(resmlp.at("norm.beta"), (Shape{1, 1, 384}));
  auto gmlp = keys_of("gmlp_s16_224");
  EXPECT_EQ(gmlp.at("blocks.0.norm.weight"), (Shape{256}));
  EXPECT_EQ(gmlp.at("blocks.0.mlp_channels.fc1.weight"), (Shape{1536, 256}));
  EXPECT_EQ(gmlp.at("blocks.0.mlp_channels.gate.norm.weight"), (Shape{768}));
  EXPECT_EQ(gmlp.at("blocks.0.mlp_channels.gate.proj.weight"), (Shape{196, 196}));
  EXPECT_EQ(gmlp.at("blocks.29.mlp_channels.fc2.weight"), (Shape{256, 768}));
}

// timm's published counts (spec sections 7.3 and 12), in millions with two decimals.
TEST(ZooMixers, ParameterCountsMatchTimmsPublished) {
  const std::vector<std::pair<const char*, double>> published{
      {"mambaout_kobe", 9.14},          {"mambaout_tiny", 26.55},          {"mambaout_small", 48.49},
      {"mambaout_base", 84.81},         {"mambaout_small_rw", 48.50},      {"mambaout_base_short_rw", 88.83},
      {"mambaout_base_tall_rw", 86.48}, {"mambaout_base_wide_rw", 94.45},  {"mambaout_base_plus_rw", 101.66},
      {"mixer_s32_224", 19.10},         {"mixer_s16_224", 18.53},          {"mixer_b32_224", 60.29},
      {"mixer_b16_224", 59.88},         {"mixer_l32_224", 206.94},         {"mixer_l16_224", 208.20},
      {"gmixer_12_224", 12.70},         {"gmixer_24_224", 24.72},          {"resmlp_12_224", 15.35},
      {"resmlp_24_224", 30.02},         {"resmlp_36_224", 44.69},          {"resmlp_big_24_224", 129.14},
      {"gmlp_ti16_224", 5.87},          {"gmlp_s16_224", 19.42},           {"gmlp_b16_224", 73.08}};
  for (auto& [name, millions] : published) {
    MetaFormer m(zoo_config(name));
    EXPECT_NEAR(static_cast<double>(m.num_parameters()) / 1e6, millions, 0.006) << name;
  }
}

TEST(ZooMixers, TokenMlpsRefuseAnotherInputSize) {
  MetaFormer m(zoo_config("resmlp_12_224"));
  initialize_parameters(m, 1);
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  const Tensor x = random_tensor({1, 192, 192, 3}, 1);
  try {
    m.run(ctx, x);
    FAIL() << "a 192x192 input reached a 196-token layer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("196 tokens"), std::string::npos) << e.what();
  }
}

// The description's new keys reject what they do not know, naming it.
TEST(ZooMixers, BadBlockLayoutStemAndHeadAreClearErrors) {
  const std::string base = R"({"depths": [1], "dims": [8], "mixers": "pooling", )";
  const std::vector<std::pair<std::string, std::string>> bad{
      {R"("block": "mamba2"})", "unknown block 'mamba2'"},  // ("mamba" is transformers' MambaBlock)
      {R"("layout": "flat"})", "layout must be 'hierarchical' or 'isotropic'"},
      {R"("stem": {"type": "triple_conv"}})", "stem type must be"},
      {R"("head": {"type": "fancy"}})", "unknown head type 'fancy'"},
      {R"("layout": "isotropic"})", "token_norm_linear"},
      {R"("norms": "affine_nobias"})", "unknown norm 'affine_nobias'"},
      {R"("mixers": {"type": "gated_cnn", "conv_ratio": 9.0}})", "conv_ratio"}};
  for (const auto& [tail, message] : bad) {
    std::string json = base + tail;
    if (tail.rfind(R"("mixers")", 0) == 0) json = R"({"depths": [1], "dims": [8], )" + tail;
    try {
      MetaFormer m(parse_config(json, "test.json"));
      ADD_FAILURE() << json << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << json << " -> " << e.what();
    }
  }
}

// A MetaFormer for Fashion-MNIST with one mixer in every stage.
std::string fmnist_config(const std::string& dir, const nlohmann::json& mixer, const std::string& block) {
  nlohmann::json c = {{"name", "fmnist_mixer"},
                      {"in_chans", 1},
                      {"num_classes", 10},
                      {"depths", {1, 1, 1}},
                      {"dims", {16, 32, 64}},
                      {"block", block},
                      {"mixers", mixer},
                      {"norms", "layer_norm"},
                      {"mlp", {{"act", "gelu"}, {"bias", true}, {"ratio", 2}}},
                      {"stem", {{"kernel_size", 3}, {"stride", 2}, {"padding", 1}, {"norm", "layer_norm"}}},
                      {"downsample", {{"kernel_size", 3}, {"stride", 2}, {"padding", 1}, {"norm", "layer_norm"}}},
                      {"head", {{"type", "linear"}}},
                      {"input", {{"size", 28}, {"mean", {0.286}}, {"std", {0.353}}}}};
  const std::string path = dir + "/config.json";
  std::ofstream(path) << c.dump(2);
  return path;
}

struct TrainCase {
  std::string name;
  nlohmann::json mixer;
  std::string block = "metaformer";
};

class MixerTrains : public ::testing::TestWithParam<TrainCase> {};

TEST_P(MixerTrains, LossFallsOnFashionMnist) {
  if (!fs::exists(kDebianFashionMnistDir))
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TempDir tmp;
  const std::string config = fmnist_config(tmp.path(), GetParam().mixer, GetParam().block);
  CliResult r = run_cli({"train", "--config", config, "--data", "fashion-mnist", "--epochs", "4", "--batch", "32",
                         "--subset", "2000", "--eval-subset", "500", "--lr", "3e-3", "--out", tmp.file("run"),
                         "--threads", "2", "--no-progress"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream f(tmp.file("run/metrics.jsonl"));
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 4u);
  // The loss starts at about ln(10) = 2.30 (ten balanced classes, small initial logits); "well below"
  // here is at least 35% lower after 250 steps, and still falling.
  const double first = rows.front()["train_loss"], last = rows.back()["train_loss"];
  EXPECT_LT(last, 0.65 * std::log(10.0)) << GetParam().name << ": the loss should fall well below ln(10) = 2.30";
  EXPECT_LT(last, first) << GetParam().name;
  EXPECT_GT(rows.back()["top1"].get<double>(), 50.0) << GetParam().name;
}

INSTANTIATE_TEST_SUITE_P(
    Mixers, MixerTrains,
    ::testing::Values(TrainCase{"gated_cnn", "gated_cnn"}, TrainCase{"mambaout_block", "gated_cnn", "mambaout"},
                      TrainCase{"token_mlp", "token_mlp"},
                      TrainCase{"token_mlp_glu", {{"type", "token_mlp"}, {"ratio", 1.0}, {"glu", true}}},
                      TrainCase{"spatial_mlp", "spatial_mlp"}, TrainCase{"spatial_gating", "spatial_gating"},
                      TrainCase{"gmlp_block", "spatial_gating", "gmlp"}, TrainCase{"global_filter", "global_filter"},
                      TrainCase{"aff", {{"type", "aff"}, {"num_blocks", 4}}}, TrainCase{"axial_mlp", "axial_mlp"},
                      TrainCase{"wavelet", "wavelet"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace mf::test
