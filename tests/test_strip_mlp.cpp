// Strip-MLP: the authors' key names and parameter counts, the golden models built with the authors'
// own class (tools/golden/make_stripmlp_golden.py; tests/data/golden/stripmlp*), whole-model gradients,
// the error for a checkpoint of another variant, and the `strip` mixer inside the generic MetaFormer.
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

std::map<std::string, Shape> keys_of(const std::string& model) {
  MetaFormer m(zoo_config(model));
  std::map<std::string, Shape> keys;
  for (auto& [name, p] : m.named_parameters()) keys[name] = p->value.shape();
  return keys;
}

// The keys of the authors' StripMLPNet(embed_dim=80, layers=[2, 2, 12, 2], alpha=3).state_dict().
TEST(StripMlp, KeysAreTheAuthors) {
  auto k = keys_of("stripmlp_tiny");
  EXPECT_EQ(k.at("patch_embed.weight"), (Shape{80, 3, 4, 4}));
  const std::string b = "blocks1.0.token_mixing.smlp_block.";
  // Width 80 is a multiple of 80: strips of patch 2, so self.C = 80 / 4 = 20 groups over a 56x56 grid.
  EXPECT_EQ(k.at(b + "proj_h.weight"), (Shape{20 * 56, 56, 1, 3}));
  EXPECT_EQ(k.at(b + "proj_h.bias"), (Shape{20 * 56}));
  EXPECT_EQ(k.at(b + "proj_w.weight"), (Shape{20 * 56, 56, 1, 3}));
  EXPECT_EQ(k.at(b + "BN.weight"), (Shape{40}));
  EXPECT_EQ(k.at(b + "BN.running_var"), (Shape{40}));
  EXPECT_EQ(k.count(b + "BN.num_batches_tracked"), 1u);
  EXPECT_EQ(k.at(b + "fuse_h.weight"), (Shape{40, 80, 1, 1}));
  EXPECT_EQ(k.at(b + "fuse_w.weight"), (Shape{40, 80, 1, 1}));
  EXPECT_EQ(k.at(b + "mlp.0.weight"), (Shape{80, 80, 1, 1}));
  EXPECT_EQ(k.at(b + "mlp.0.bias"), (Shape{80}));
  EXPECT_EQ(k.at(b + "mlp.1.running_mean"), (Shape{80}));
  EXPECT_EQ(k.at(b + "fc_h.weight"), (Shape{40, 1, 3, 7}));
  EXPECT_EQ(k.at(b + "fc_w.weight"), (Shape{40, 1, 7, 3}));
  EXPECT_EQ(k.at(b + "reweight.fc1.weight"), (Shape{20, 40, 1, 1}));
  EXPECT_EQ(k.at(b + "reweight.fc2.weight"), (Shape{120, 20, 1, 1}));
  EXPECT_EQ(k.at(b + "reweight.fc2.bias"), (Shape{120}));
  EXPECT_EQ(k.at(b + "fuse.weight"), (Shape{80, 80, 1, 1}));
  EXPECT_EQ(k.at(b + "relate_pos_h.embeddings_table"), (Shape{113, 40}));
  EXPECT_EQ(k.at(b + "relate_pos_w.embeddings_table"), (Shape{113, 40}));
  EXPECT_EQ(k.at("blocks1.0.token_mixing.dwsc.conv_merge.BN.weight"), (Shape{80}));
  EXPECT_EQ(k.at("blocks1.0.token_mixing.dwsc.conv_merge.Conv.weight"), (Shape{80, 1, 3, 3}));
  EXPECT_EQ(k.count("blocks1.0.token_mixing.dwsc.conv_merge.Conv.bias"), 0u);
  EXPECT_EQ(k.at("blocks1.0.channel_mixing.conv_77.weight"), (Shape{80, 1, 7, 7}));
  EXPECT_EQ(k.at("blocks1.0.channel_mixing.layer_norm.weight"), (Shape{80}));
  EXPECT_EQ(k.at("blocks1.0.channel_mixing.fc1.weight"), (Shape{240, 80}));
  EXPECT_EQ(k.at("blocks1.0.channel_mixing.fc2.weight"), (Shape{80, 240}));
  EXPECT_EQ(k.at("blocks1.0.channel_mixing.grn.gamma"), (Shape{1, 1, 1, 240}));
  EXPECT_EQ(k.at("blocks1.0.channel_mixing.grn.beta"), (Shape{1, 1, 1, 240}));
  // Stage 4: width 640, 160 groups over the 7x7 grid.
  EXPECT_EQ(k.at("blocks4.1.token_mixing.smlp_block.proj_w.weight"), (Shape{160 * 7, 7, 1, 3}));
  EXPECT_EQ(k.count("blocks3.11.channel_mixing.fc1.bias"), 1u);
  EXPECT_EQ(k.count("blocks3.12.channel_mixing.fc1.bias"), 0u);
  EXPECT_EQ(k.at("merging1.weight"), (Shape{160, 80, 2, 2}));
  EXPECT_EQ(k.at("merging3.weight"), (Shape{640, 320, 2, 2}));
  EXPECT_EQ(k.at("conv_s1_28.weight"), (Shape{320, 1, 2, 2}));
  EXPECT_EQ(k.at("conv_s1_14.weight"), (Shape{640, 1, 2, 2}));
  EXPECT_EQ(k.at("conv_s2_14.weight"), (Shape{640, 1, 2, 2}));
  EXPECT_EQ(k.at("head.weight"), (Shape{1000, 640}));
  EXPECT_EQ(k.at("norm.running_mean"), (Shape{640}));
}

// The parameter count of the authors' class (printed by the golden script into param_counts.json).
TEST(StripMlp, ParameterCountIsTheAuthors) {
  const std::string path = data_path("golden/stripmlp_param_counts.json");
  if (!std::filesystem::exists(path))
    FAIL() << "missing reference: copy param_counts.json from make_stripmlp_golden.py's output to " << path;
  std::ifstream f(path);
  const nlohmann::json counts = nlohmann::json::parse(f);
  EXPECT_EQ(MetaFormer(zoo_config("stripmlp_tiny")).num_parameters(), counts.at("stripmlp_tiny").get<int64_t>());
}

TEST(StripMlp, ConfigRoundTripsThroughJson) {
  const MetaFormerConfig c = zoo_config("stripmlp_tiny");
  EXPECT_EQ(parse_config(config_to_json(c).dump(), "stripmlp_tiny"), c);
}

constexpr double kGoldenTolerance = 2e-5;  // as tests/test_golden.cpp: float32 against float64

struct GoldenCase {
  std::string folder;
  std::string backend;
};

class StripMlpGolden : public ::testing::TestWithParam<GoldenCase> {};

// Logits of the authors' models (their class, float64, eval mode) from their state_dict() as it is.
TEST_P(StripMlpGolden, MatchesTheAuthorsCode) {
  const std::string dir = data_path("golden/" + GetParam().folder);
  if (!std::filesystem::exists(dir + "/io.safetensors"))
    FAIL() << "missing reference: copy the output of tools/golden/make_stripmlp_golden.py (run on a machine "
                    "with PyTorch) into " << dir;
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
  RecordProperty("logits_rel_error", fmt::format("{:.2e}", err));
}

std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> v;
  for (const char* f : {"stripmlp", "stripmlp_224"})
    for (const char* b : {"cpu", "ref"}) v.push_back({f, b});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Families, StripMlpGolden, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param.folder + "_" + info.param.backend; });

// A small Strip-MLP (widths 10..80: both of the authors' strip-group rules) with every parameter
// random, as the golden script makes it.
MetaFormerConfig small_config(int embed, int size = 64) {
  return parse_config(fmt::format(R"({{"name": "stripmlp_small", "layout": "stripmlp", "num_classes": 5,
      "depths": [1, 1, 1, 1], "dims": [{}, {}, {}, {}], "mixers": "strip",
      "norms": {{"type": "layer_norm", "eps": 1e-5}}, "mlp": {{"act": "gelu", "bias": true, "ratio": 3}},
      "stem": {{"kernel_size": 4, "stride": 4, "padding": 0}}, "downsample": {{"kernel_size": 2, "stride": 2, "padding": 0}},
      "head": {{"type": "linear", "norm": {{"type": "batch_norm", "eps": 1e-5}}}}, "input": {{"size": {}}}}})",
                                  embed, 2 * embed, 4 * embed, 8 * embed, size),
                      "stripmlp_small");
}

void randomize(MetaFormer& m) {
  uint64_t seed = 40;
  for (auto& [name, p] : m.named_parameters()) {
    const bool positive = p->buffer || name.find("norm") != std::string::npos || name.find("BN") != std::string::npos;
    if (p->integer) continue;
    p->value.copy_from(random_tensor(p->value.shape(), seed++, positive ? 0.5f : -0.5f, positive ? 1.5f : 0.5f));
  }
}

// As tests/test_model_backward.cpp: the derivative of the loss along a random direction in parameter
// space against central differences, on the ref backend (BatchNorm in training mode).
TEST(StripMlp, DirectionalDerivativeMatchesFiniteDifferences) {
  MetaFormer model(small_config(10));
  randomize(model);
  const Tensor x = random_tensor({2, 64, 64, 3}, 11);
  const Tensor targets = smoothed_targets({3, 1}, 5, 0.1);
  Ctx ctx;
  ctx.exec.backend = &get_backend("ref");
  // Both the differences and backward of the training-mode forward (BatchNorm with the batch's
  // statistics: the function backward differentiates).
  ctx.training = true;
  const DirectionalDerivative d = cross_entropy_derivative(model, ctx, x, targets);
  EXPECT_NEAR(d.numeric, d.analytic, 2e-2 * std::fabs(d.analytic));
}

// Bad input: the right family's checkpoint for another variant (another width) names the first tensor
// whose shape differs, with both shapes.
TEST(StripMlp, CheckpointOfAnotherVariantNamesTheMismatchedTensor) {
  MetaFormer wide(small_config(12));
  const std::string path = (std::filesystem::temp_directory_path() / "mf_stripmlp_12.safetensors").string();
  save_weights(wide, path);
  MetaFormer narrow(small_config(10));
  try {
    load_weights(narrow, SafeTensors::open(path));
    FAIL() << "a width-12 checkpoint loaded into a width-10 Strip-MLP";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("patch_embed.weight (model [10, 3, 4, 4], file [12, 3, 4, 4])"), std::string::npos) << msg;
  }
  std::filesystem::remove(path);
}

// Strip-MLP's strip projections are tied to the square token grid they were built for.
TEST(StripMlp, AnotherInputSizeIsRefusedWithTheGrid) {
  MetaFormer m(small_config(10));
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  try {
    m.run(ctx, random_tensor({1, 64, 128, 3}, 1));
    FAIL() << "a 64x128 input ran through a model built for 64x64";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("built for a 16x16 token grid and cannot mix 16x32"), std::string::npos)
        << e.what();
  }
}

// The fast backend against the reference one on the whole network (eval mode, BatchNorm folded into
// mlp.0 and fuse_h on both).
TEST(StripMlp, CpuMatchesRefOnARandomModel) {
  MetaFormer m(small_config(10));
  randomize(m);
  const Tensor x = random_tensor({2, 64, 64, 3}, 3);
  Ctx ref, cpu;
  ref.exec.backend = &get_backend("ref");
  cpu.exec.backend = &get_backend("cpu");
  EXPECT_LE(rel_error(m.run(cpu, x), m.run(ref, x)), 1e-5);
}

// The `strip` mixer inside the generic MetaFormer, as `metaformer compare --mixers strip` builds it: a
// training step runs and reaches every parameter.
TEST(StripMlp, MixerTrainsInsideTheGenericMetaFormer) {
  MetaFormer m(parse_config(R"({"depths": [1, 1], "dims": [16, 32], "mixers": "strip", "num_classes": 3,
      "stem": {"kernel_size": 4, "stride": 4, "padding": 0}, "input": {"size": 32}})", "strip"));
  initialize_parameters(m, 3);
  AdamW opt(m, {});
  opt.zero_grad();
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  ctx.training = true;
  Tensor dl;
  op::cross_entropy(ctx.exec, m.run(ctx, random_tensor({2, 32, 32, 3}, 5)), smoothed_targets({0, 2}, 3, 0.1), dl);
  m.backward(ctx, dl);
  for (auto& [name, p] : opt.params()) {
    double norm = 0;
    for (float g : p->grad.span()) norm += std::fabs(g);
    if (name.find("token_mixer") != std::string::npos) {
      EXPECT_GT(norm, 0.0) << name;
    }
  }
}

}  // namespace
}  // namespace mf::test
