// iFormer: the authors' key names and parameter counts, the golden models built with the authors' own
// class (tools/golden/make_iformer_golden.py; tests/data/golden/iformer*), whole-model gradients, the
// Inception mixer inside the generic MetaFormer, and the errors for a checkpoint of another variant or
// an input of another size.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "model/zoo.h"
#include "test_util.h"
#include "train/optimizer.h"
#include "train/targets.h"

namespace mf::test {
namespace {

std::map<std::string, Shape> keys_of(const MetaFormerConfig& c) {
  MetaFormer m(c);
  std::map<std::string, Shape> keys;
  for (auto& [name, p] : m.named_parameters()) keys[name] = p->value.shape();
  return keys;
}

// The keys of the authors' iformer_small().state_dict().
TEST(IFormer, KeysAreTheAuthors) {
  auto k = keys_of(zoo_config("iformer_small"));
  EXPECT_EQ(k.at("pos_embed1"), (Shape{1, 56, 56, 96}));
  EXPECT_EQ(k.at("pos_embed4"), (Shape{1, 7, 7, 384}));
  EXPECT_EQ(k.at("patch_embed.proj1.weight"), (Shape{48, 3, 3, 3}));
  EXPECT_EQ(k.at("patch_embed.norm1.running_mean"), (Shape{48}));
  EXPECT_EQ(k.at("patch_embed.proj2.weight"), (Shape{96, 48, 3, 3}));
  EXPECT_EQ(k.at("patch_embed.norm2.weight"), (Shape{96}));
  EXPECT_EQ(k.at("patch_embed2.proj.weight"), (Shape{192, 96, 3, 3}));
  EXPECT_EQ(k.at("patch_embed2.norm.num_batches_tracked"), (Shape{}));
  // Stage 1: head_dim 32, one attention head: 32 low channels, 64 high (32 conv, 32 max-pool).
  EXPECT_EQ(k.at("blocks1.0.norm1.weight"), (Shape{96}));
  EXPECT_EQ(k.at("blocks1.0.attn.high_mixer.conv1.weight"), (Shape{64, 32, 1, 1}));
  EXPECT_EQ(k.at("blocks1.0.attn.high_mixer.proj1.weight"), (Shape{64, 1, 3, 3}));
  EXPECT_EQ(k.at("blocks1.0.attn.high_mixer.proj2.weight"), (Shape{64, 32, 1, 1}));
  EXPECT_EQ(k.at("blocks1.0.attn.high_mixer.proj2.bias"), (Shape{64}));
  EXPECT_EQ(k.at("blocks1.0.attn.low_mixer.qkv.weight"), (Shape{96, 32}));
  EXPECT_EQ(k.at("blocks1.0.attn.low_mixer.qkv.bias"), (Shape{96}));
  EXPECT_EQ(k.at("blocks1.0.attn.conv_fuse.weight"), (Shape{160, 1, 3, 3}));  // 32 + 2 · 64
  EXPECT_EQ(k.at("blocks1.0.attn.proj.weight"), (Shape{96, 160, 1, 1}));
  EXPECT_EQ(k.at("blocks1.0.mlp.fc1.weight"), (Shape{384, 96}));
  EXPECT_EQ(k.at("blocks1.0.mlp.fc2.bias"), (Shape{96}));
  EXPECT_EQ(k.count("blocks1.0.layer_scale_1"), 0u);  // layer scale only in stages 3-4
  // Stage 3: 7 then 9 attention heads of 32: 224 then 288 low channels of 320.
  EXPECT_EQ(k.at("blocks3.3.attn.low_mixer.qkv.weight"), (Shape{672, 224}));
  EXPECT_EQ(k.at("blocks3.4.attn.low_mixer.qkv.weight"), (Shape{864, 288}));
  EXPECT_EQ(k.at("blocks3.4.attn.high_mixer.conv1.weight"), (Shape{32, 16, 1, 1}));
  EXPECT_EQ(k.at("blocks3.8.layer_scale_1"), (Shape{320}));
  EXPECT_EQ(k.at("blocks4.2.layer_scale_2"), (Shape{384}));
  EXPECT_EQ(k.at("norm.weight"), (Shape{384}));
  EXPECT_EQ(k.at("head.weight"), (Shape{1000, 384}));
  EXPECT_EQ(k.count("blocks3.9.norm1.weight"), 0u);
}

// The authors' counts: their docstrings (19.866M, 47.866M, 86.637M) and their classes, as
// make_iformer_golden.py prints them into param_counts_iformer.json.
TEST(IFormer, ParameterCountsAreTheAuthors) {
  const std::map<std::string, int64_t> theirs{
      {"iformer_small", 19866344}, {"iformer_base", 47866216}, {"iformer_large", 86637096}};
  for (auto& [name, count] : theirs) EXPECT_EQ(MetaFormer(zoo_config(name)).num_parameters(), count) << name;
  const std::string file = data_path("golden/param_counts_iformer.json");
  if (!std::filesystem::exists(file)) FAIL() << "missing " << file << " (the golden script writes it)";
  const auto printed = nlohmann::json::parse(std::ifstream(file));
  for (auto& [name, count] : theirs) EXPECT_EQ(printed.at(name).get<int64_t>(), count) << name;
}

TEST(IFormer, ConfigsRoundTripThroughJson) {
  for (const char* name : {"iformer_small", "iformer_large"}) {
    const MetaFormerConfig c = zoo_config(name);
    EXPECT_EQ(parse_config(config_to_json(c).dump(), name), c) << name;
  }
}

constexpr double kGoldenTolerance = 2e-5;  // as tests/test_golden.cpp: float32 against float64

struct GoldenCase {
  std::string folder;
  std::string backend;
};

class IFormerGolden : public ::testing::TestWithParam<GoldenCase> {};

// Logits of the authors' models (their class, float64, random weights, BatchNorm statistics and
// position tables) from their state_dict() as it is.
TEST_P(IFormerGolden, MatchesTheAuthorsCode) {
  const std::string dir = data_path("golden/" + GetParam().folder);
  if (!std::filesystem::exists(dir + "/config.json"))
    FAIL() << "no golden files in " << dir << ": run tools/golden/make_iformer_golden.py where torch is";
  MetaFormer model(load_config(dir + "/config.json"));
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  SafeTensors io = SafeTensors::open(dir + "/io.safetensors");
  Ctx ctx;
  ctx.exec.backend = &get_backend(GetParam().backend);
  const Tensor logits = model.forward_nchw(ctx, io.load("input"));
  const Tensor expected = io.load("logits");
  ASSERT_EQ(logits.shape(), expected.shape());
  const double err = rel_error(logits, expected);
  EXPECT_LE(err, kGoldenTolerance) << GetParam().folder;
  RecordProperty("logits_rel_error", std::to_string(err));
}

std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> v;
  for (const char* f : {"iformer", "iformer_224"})
    for (const char* b : {"cpu", "ref"}) v.push_back({f, b});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Sizes, IFormerGolden, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param.folder + "_" + info.param.backend; });

// A small iFormer of the golden CI model's layout (at twice its widths), described here so that the tests below
// need no files.
MetaFormerConfig small_iformer(const std::string& stage3_attention) {
  return parse_config(fmt::format(R"({{"name": "iformer_small_test", "layout": "iformer", "num_classes": 10,
      "depths": [1, 1, 2, 1], "dims": [16, 32, 48, 64],
      "mixers": [{{"type": "inception", "heads": 2, "attention_heads": [1], "pool_size": 2}},
                 {{"type": "inception", "heads": 2, "attention_heads": [1], "pool_size": 2}},
                 {{"type": "inception", "heads": 4, "attention_heads": {}, "pool_size": 1}},
                 {{"type": "inception", "heads": 4, "attention_heads": [2], "pool_size": 1}}],
      "norms": {{"type": "layer_norm", "eps": 1e-6}}, "mlp": {{"act": "gelu", "bias": true, "ratio": 4}},
      "layer_scale_init": [null, null, 1e-6, 1e-6],
      "stem": {{"type": "two_conv", "kernel_size": 3, "stride": 2, "padding": 1, "norm": {{"type": "batch_norm",
               "eps": 1e-5}}, "mid_norm": true}},
      "downsample": {{"kernel_size": 3, "stride": 2, "padding": 1, "norm": {{"type": "batch_norm", "eps": 1e-5}},
                     "norm_after": true}},
      "head": {{"type": "linear", "norm": {{"type": "layer_norm", "eps": 1e-6}}}}, "input": {{"size": 64}}}})",
                                  stage3_attention),
                      "iformer_small_test");
}

// Training: the gradient of the loss along a random direction in every trainable parameter against
// central differences of the training-mode forward (BatchNorm with the batch's statistics), ref backend.
TEST(IFormer, TrainingGradientMatchesFiniteDifferences) {
  MetaFormer model(small_iformer("[2, 3]"));
  initialize_parameters(model, 5);
  const Tensor x = random_tensor({2, 64, 64, 3}, 11);
  const Tensor targets = smoothed_targets({3, 7}, 10, 0.1);
  Ctx ctx;
  ctx.exec.backend = &get_backend("ref");
  ctx.training = true;
  const DirectionalDerivative d = cross_entropy_derivative(model, ctx, x, targets);
  EXPECT_NEAR(d.numeric, d.analytic, 2e-2 * std::fabs(d.analytic));
}

// Bad input: the right family's checkpoint for another variant (other attention widths in stage 3)
// names the first tensor whose shape differs, with both shapes.
TEST(IFormer, CheckpointOfAnotherVariantNamesTheMismatchedTensor) {
  MetaFormer other(small_iformer("[2, 3]"));
  initialize_parameters(other, 1);
  const std::string path = (std::filesystem::temp_directory_path() / "mf_iformer_other.safetensors").string();
  save_weights(other, path);
  MetaFormer model(small_iformer("[2, 2]"));
  try {
    load_weights(model, SafeTensors::open(path));
    FAIL() << "a checkpoint with 3 attention heads in blocks3.1 loaded into a model with 2";
  } catch (const Error& e) {
    const std::string msg = e.what();
    // blocks3.1: head_dim 12; 2 heads leave 24 high-frequency channels (conv half 12 -> 24), 3 leave 12.
    EXPECT_NE(msg.find("blocks3.1.attn.high_mixer.conv1.weight (model [24, 12, 1, 1], file [12, 6, 1, 1])"),
              std::string::npos)
        << msg;
  }
  std::filesystem::remove(path);
}

TEST(IFormer, RefusesAnotherInputSize) {
  MetaFormer m(small_iformer("[2, 3]"));
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  try {
    m.run(ctx, Tensor::zeros({1, 64, 96, 3}));
    FAIL() << "a 64x96 input reached an iFormer made for 64x64";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("iFormer takes 64x64 inputs (its position tables' size); got 64x96"),
              std::string::npos)
        << e.what();
  }
}

// The Inception mixer inside the generic MetaFormer, as `metaformer compare --mixers inception` builds it:
// a training step runs and reaches every parameter of the mixer.
TEST(IFormer, InceptionMixerTrainsInsideTheGenericMetaFormer) {
  MetaFormer m(parse_config(R"({"depths": [1, 1], "dims": [16, 32], "num_classes": 3,
      "mixers": {"type": "inception", "heads": 2, "attention_heads": 1},
      "stem": {"kernel_size": 4, "stride": 4, "padding": 0}, "input": {"size": 32}})", "inception"));
  initialize_parameters(m, 3);
  AdamW opt(m, {});
  opt.zero_grad();
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  ctx.training = true;
  Tensor dl;
  op::cross_entropy(ctx.exec, m.run(ctx, random_tensor({2, 32, 32, 3}, 5)), smoothed_targets({0, 2}, 3, 0.1), dl);
  m.backward(ctx, dl);
  int64_t mixer_params = 0;
  for (auto& [name, p] : opt.params()) {
    if (name.find("token_mixer") == std::string::npos) continue;
    double norm = 0;
    for (float g : p->grad.span()) norm += std::fabs(g);
    EXPECT_GT(norm, 0.0) << name;
    ++mixer_params;
  }
  EXPECT_GT(mixer_params, 0);
}

}  // namespace
}  // namespace mf::test
