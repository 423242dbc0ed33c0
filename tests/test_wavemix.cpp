// WaveMix: the authors' key names and parameter counts, the golden models built with the authors' own
// classes (tools/golden/make_wavemix_golden.py; tests/data/golden/wavemix*), whole-model gradients, the
// mixer inside the generic MetaFormer, and the errors for a checkpoint of another variant or an input
// that does not divide into the block's cells.
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

// The keys of the authors' WaveMix(final_dim=192, ff_channel=192, mult=2, level=3, patch_size=4,
// depth=16).state_dict() (wavemix/classification.py with wavemix/__init__.py's Level3Waveblock).
TEST(WaveMix, KeysAreTheAuthors) {
  auto k = keys_of("wavemix");
  EXPECT_EQ(k.at("conv.0.weight"), (Shape{48, 3, 3, 3}));
  EXPECT_EQ(k.at("conv.1.weight"), (Shape{96, 48, 3, 3}));
  EXPECT_EQ(k.at("conv.2.weight"), (Shape{192, 96, 4, 4}));
  EXPECT_EQ(k.at("conv.4.running_var"), (Shape{192}));
  EXPECT_EQ(k.at("layers.0.reduction.weight"), (Shape{48, 192, 1, 1}));
  EXPECT_EQ(k.at("layers.0.feedforward1.0.weight"), (Shape{384, 288, 1, 1}));  // cat(level 1, level 2's output)
  EXPECT_EQ(k.at("layers.0.feedforward1.3.weight"), (Shape{192, 384, 1, 1}));
  EXPECT_EQ(k.at("layers.0.feedforward1.4.weight"), (Shape{192, 192, 4, 4}));  // ConvTranspose2d [in, out, k, k]
  EXPECT_EQ(k.at("layers.0.feedforward1.5.weight"), (Shape{192}));
  EXPECT_EQ(k.at("layers.0.feedforward2.4.weight"), (Shape{192, 96, 4, 4}));
  EXPECT_EQ(k.at("layers.0.feedforward2.5.num_batches_tracked"), (Shape{}));
  EXPECT_EQ(k.at("layers.15.feedforward3.0.weight"), (Shape{384, 192, 1, 1}));  // the deepest level alone
  EXPECT_EQ(k.at("layers.15.feedforward3.4.bias"), (Shape{96}));
  EXPECT_EQ(k.at("pool.2.weight"), (Shape{1000, 192}));
  EXPECT_EQ(k.count("layers.0.feedforward4.0.weight"), 0u);
  EXPECT_EQ(k.count("conv.3.weight"), 0u);  // GELU
  // Level 1 (WaveMix-Lite's block): one feedforward, without a number.
  auto lite = keys_of("wavemix_lite");
  EXPECT_EQ(lite.at("layers.3.feedforward.0.weight"), (Shape{384, 192, 1, 1}));
  EXPECT_EQ(lite.at("layers.3.feedforward.4.weight"), (Shape{192, 192, 4, 4}));
  EXPECT_EQ(lite.count("layers.3.feedforward1.0.weight"), 0u);
}

// The authors' classes' parameter counts (nn.Module.parameters(): BatchNorm's buffers not included),
// as make_wavemix_golden.py prints them into param_counts_wavemix.json.
TEST(WaveMix, ParameterCountsAreTheAuthors) {
  const std::map<std::string, int64_t> theirs{{"wavemix", 27857608}, {"wavemix_lite", 12494536}};
  for (auto& [name, count] : theirs) EXPECT_EQ(MetaFormer(zoo_config(name)).num_parameters(), count) << name;
  const std::string file = data_path("golden/param_counts_wavemix.json");
  if (!std::filesystem::exists(file)) FAIL() << "missing " << file << " (the golden script writes it)";
  const auto printed = nlohmann::json::parse(std::ifstream(file));
  for (auto& [name, count] : theirs) EXPECT_EQ(printed.at(name).get<int64_t>(), count) << name;
}

TEST(WaveMix, ConfigsRoundTripThroughJson) {
  for (const char* name : {"wavemix", "wavemix_lite"}) {
    const MetaFormerConfig c = zoo_config(name);
    EXPECT_EQ(parse_config(config_to_json(c).dump(), name), c) << name;
  }
}

constexpr double kGoldenTolerance = 2e-5;  // as tests/test_golden.cpp: float32 against float64

struct GoldenCase {
  std::string folder;
  std::string backend;
};

class WaveMixGolden : public ::testing::TestWithParam<GoldenCase> {};

// Logits of the authors' models (their classes, float64, random weights and BatchNorm statistics)
// from their state_dict() as it is.
TEST_P(WaveMixGolden, MatchesTheAuthorsCode) {
  const std::string dir = data_path("golden/" + GetParam().folder);
  if (!std::filesystem::exists(dir + "/config.json"))
    FAIL() << "no golden files in " << dir << ": run tools/golden/make_wavemix_golden.py where torch is";
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
  for (const char* f : {"wavemix", "wavemix_level1", "wavemix_level2", "wavemix_level4", "wavemix_strided", "wavemix_224"})
    for (const char* b : {"cpu", "ref"}) v.push_back({f, b});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Levels, WaveMixGolden, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param.folder + "_" + info.param.backend; });

// The ImageNet layout at 192x256 (token grids 48x64 down to 6x8), the weights of wavemix_224.
TEST(WaveMix, At192x256MatchesTheAuthorsCode) {
  const std::string dir = data_path("golden/wavemix_224");
  if (!std::filesystem::exists(dir + "/io_192x256.safetensors"))
    FAIL() << "no golden files in " << dir << ": run tools/golden/make_wavemix_golden.py where torch is";
  MetaFormer model(load_config(dir + "/config.json"));
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  SafeTensors io = SafeTensors::open(dir + "/io_192x256.safetensors");
  for (const char* backend : {"cpu", "ref"}) {
    Ctx ctx;
    ctx.exec.backend = &get_backend(backend);
    EXPECT_LE(rel_error(model.forward_nchw(ctx, io.load("input")), io.load("logits")), kGoldenTolerance) << backend;
  }
}

// A small WaveMix of the given level and stem (as the golden script's CI models).
MetaFormerConfig small_wavemix(int level, bool strided) {
  const std::string stem = strided ? R"({"type": "two_conv", "kernel_size": 3, "stride": 2, "padding": 1, "norm": null})"
                                   : R"({"type": "patch", "kernel_size": 4, "stride": 4, "padding": 0,
                                         "norm": {"type": "batch_norm", "eps": 1e-5}})";
  return parse_config(fmt::format(R"({{"name": "wavemix_small", "layout": "wavemix", "num_classes": 10, "depths": [2],
      "dims": [16], "mixers": [{{"type": "wavemix", "level": {}, "ff_channel": 12, "mult": 2}}],
      "norms": {{"type": "batch_norm", "eps": 1e-5}}, "stem": {}, "head": {{"type": "linear"}},
      "input": {{"size": 32}}}})", level, stem), "wavemix_small");
}

// Training: the gradient of the loss along a random direction in every trainable parameter against
// central differences of the training-mode forward (BatchNorm with the batch's statistics), ref backend.
TEST(WaveMix, TrainingGradientMatchesFiniteDifferences) {
  for (auto [level, strided] : {std::pair{2, false}, std::pair{1, true}}) {
    MetaFormer model(small_wavemix(level, strided));
    initialize_parameters(model, 5);
    const Tensor x = random_tensor({2, 32, 32, 3}, 11);
    const Tensor targets = smoothed_targets({3, 7}, 10, 0.1);
    Ctx ctx;
    ctx.exec.backend = &get_backend("ref");
    ctx.training = true;
    const DirectionalDerivative d = cross_entropy_derivative(model, ctx, x, targets);
    EXPECT_NEAR(d.numeric, d.analytic, 2e-2 * std::fabs(d.analytic)) << "level " << level;
  }
}

// Bad input: the right family's checkpoint for another variant (level 2's blocks into a level-3
// model) names the first tensor whose shape differs, with both shapes.
TEST(WaveMix, CheckpointOfAnotherVariantNamesTheMismatchedTensor) {
  MetaFormer level2(small_wavemix(2, false));
  initialize_parameters(level2, 1);
  const std::string path = (std::filesystem::temp_directory_path() / "mf_wavemix_level2.safetensors").string();
  save_weights(level2, path);
  MetaFormer level3(small_wavemix(3, false));
  try {
    load_weights(level3, SafeTensors::open(path));
    FAIL() << "a level-2 WaveMix checkpoint loaded into a level-3 model";
  } catch (const Error& e) {
    const std::string msg = e.what();
    // Level 2's deepest feedforward (feedforward2) reads C = 16 channels; level 3's reads C + C/2.
    EXPECT_NE(msg.find("layers.0.feedforward2.0.weight (model [32, 24, 1, 1], file [32, 16, 1, 1])"), std::string::npos)
        << msg;
  }
  std::filesystem::remove(path);
}

TEST(WaveMix, RefusesAnInputThatDoesNotDivideIntoCells) {
  MetaFormer m(zoo_config("wavemix"));
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  try {
    m.run(ctx, Tensor::zeros({1, 200, 224, 3}));
    FAIL() << "a 200x224 input reached a level-3 WaveMix";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a 200x224 input does not divide into 32x32 cells"), std::string::npos)
        << e.what();
  }
}

// The block inside the generic MetaFormer, as `metaformer compare --mixers wavemix` builds it: a
// training step runs and reaches every parameter of the mixer.
TEST(WaveMix, MixerTrainsInsideTheGenericMetaFormer) {
  MetaFormer m(parse_config(R"({"depths": [1, 1], "dims": [16, 32], "mixers": "wavemix", "num_classes": 3,
      "stem": {"kernel_size": 4, "stride": 4, "padding": 0}, "input": {"size": 32}})", "wavemix"));
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
    // The transposed convolution's bias feeds a training-mode BatchNorm, whose batch mean absorbs it:
    // its gradient is zero up to rounding.
    if (name.size() > 7 && name.compare(name.size() - 7, 7, ".4.bias") == 0) continue;
    double norm = 0;
    for (float g : p->grad.span()) norm += std::fabs(g);
    EXPECT_GT(norm, 0.0) << name;
    ++mixer_params;
  }
  EXPECT_GT(mixer_params, 0);
}

}  // namespace
}  // namespace mf::test
