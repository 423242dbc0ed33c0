// CAS-ViT: the authors' key names and parameter counts, the golden models built with the authors' own
// RCViT class (tools/golden/make_casvit_golden.py; tests/data/golden/casvit*), whole-model gradients,
// the error for a checkpoint of another variant, and the `additive` mixer inside the generic MetaFormer.
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

// The keys of the authors' rcvit_xs().state_dict().
TEST(CasVit, KeysAreTheAuthors) {
  auto k = keys_of("casvit_xs");
  EXPECT_EQ(k.at("patch_embed.0.weight"), (Shape{24, 3, 3, 3}));
  EXPECT_EQ(k.at("patch_embed.0.bias"), (Shape{24}));
  EXPECT_EQ(k.at("patch_embed.1.running_mean"), (Shape{24}));
  EXPECT_EQ(k.count("patch_embed.1.num_batches_tracked"), 1u);
  EXPECT_EQ(k.at("patch_embed.3.weight"), (Shape{48, 24, 3, 3}));
  EXPECT_EQ(k.at("patch_embed.4.weight"), (Shape{48}));
  const std::string b = "network.0.0.";
  EXPECT_EQ(k.at(b + "local_perception.network.0.weight"), (Shape{48, 48, 1, 1}));
  EXPECT_EQ(k.at(b + "local_perception.network.1.running_var"), (Shape{48}));
  EXPECT_EQ(k.at(b + "local_perception.network.2.weight"), (Shape{48, 1, 3, 3}));
  EXPECT_EQ(k.at(b + "local_perception.network.4.bias"), (Shape{48}));
  EXPECT_EQ(k.at(b + "norm1.weight"), (Shape{48}));
  EXPECT_EQ(k.at(b + "attn.qkv.weight"), (Shape{144, 48, 1, 1}));
  EXPECT_EQ(k.count(b + "attn.qkv.bias"), 0u);
  EXPECT_EQ(k.at(b + "attn.oper_q.0.block.0.weight"), (Shape{48, 1, 3, 3}));
  EXPECT_EQ(k.at(b + "attn.oper_q.0.block.0.bias"), (Shape{48}));
  EXPECT_EQ(k.at(b + "attn.oper_q.0.block.1.running_mean"), (Shape{48}));
  EXPECT_EQ(k.at(b + "attn.oper_q.0.block.3.weight"), (Shape{1, 48, 1, 1}));
  EXPECT_EQ(k.at(b + "attn.oper_q.1.block.1.weight"), (Shape{48, 48, 1, 1}));
  EXPECT_EQ(k.at(b + "attn.oper_k.0.block.3.weight"), (Shape{1, 48, 1, 1}));
  EXPECT_EQ(k.at(b + "attn.dwc.weight"), (Shape{48, 1, 3, 3}));
  EXPECT_EQ(k.at(b + "attn.proj.bias"), (Shape{48}));
  EXPECT_EQ(k.at(b + "norm2.running_var"), (Shape{48}));
  EXPECT_EQ(k.at(b + "mlp.fc1.weight"), (Shape{192, 48, 1, 1}));
  EXPECT_EQ(k.at(b + "mlp.fc2.weight"), (Shape{48, 192, 1, 1}));
  EXPECT_EQ(k.at("network.1.proj.weight"), (Shape{56, 48, 3, 3}));
  EXPECT_EQ(k.at("network.1.norm.weight"), (Shape{56}));
  EXPECT_EQ(k.at("network.5.proj.weight"), (Shape{220, 112, 3, 3}));
  EXPECT_EQ(k.count("network.4.3.mlp.fc1.bias"), 1u);  // XS: four blocks in stage 3
  EXPECT_EQ(k.count("network.4.4.mlp.fc1.bias"), 0u);
  EXPECT_EQ(k.count("network.6.1.attn.proj.weight"), 1u);
  EXPECT_EQ(k.count("network.7.proj.weight"), 0u);
  EXPECT_EQ(k.at("norm.weight"), (Shape{220}));
  EXPECT_EQ(k.at("head.weight"), (Shape{1000, 220}));
  EXPECT_EQ(k.at("dist_head.bias"), (Shape{1000}));
}

// The parameter counts of the authors' classes (printed by the golden script into param_counts.json).
TEST(CasVit, ParameterCountsAreTheAuthors) {
  const std::string path = data_path("golden/casvit_param_counts.json");
  if (!std::filesystem::exists(path))
    FAIL() << "missing reference: copy param_counts.json from make_casvit_golden.py's output to " << path;
  std::ifstream f(path);
  const nlohmann::json counts = nlohmann::json::parse(f);
  for (const char* name : {"casvit_xs", "casvit_s", "casvit_m", "casvit_t"})
    EXPECT_EQ(MetaFormer(zoo_config(name)).num_parameters(), counts.at(name).get<int64_t>()) << name;
}

TEST(CasVit, ConfigsRoundTripThroughJson) {
  for (const char* name : {"casvit_xs", "casvit_t"}) {
    const MetaFormerConfig c = zoo_config(name);
    EXPECT_EQ(parse_config(config_to_json(c).dump(), name), c) << name;
  }
}

constexpr double kGoldenTolerance = 2e-5;  // as tests/test_golden.cpp: float32 against float64

struct GoldenCase {
  std::string folder;
  std::string io;
  std::string backend;
};

class CasVitGolden : public ::testing::TestWithParam<GoldenCase> {};

// Logits of the authors' models (their class, float64, eval mode) from their state_dict() as it is.
TEST_P(CasVitGolden, MatchesTheAuthorsCode) {
  const std::string dir = data_path("golden/" + GetParam().folder);
  if (!std::filesystem::exists(dir + "/" + GetParam().io))
    FAIL() << "missing reference: copy the output of tools/golden/make_casvit_golden.py (run on a machine with "
                    "PyTorch) into " << dir;
  MetaFormer model(load_config(dir + "/config.json"));
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  SafeTensors io = SafeTensors::open(dir + "/" + GetParam().io);
  Ctx ctx;
  ctx.exec.backend = &get_backend(GetParam().backend);
  const Tensor logits = model.forward_nchw(ctx, io.load("input"));
  const Tensor expected = io.load("logits");
  ASSERT_EQ(logits.shape(), expected.shape());
  const double err = rel_error(logits, expected);
  EXPECT_LE(err, kGoldenTolerance) << GetParam().folder << " " << GetParam().io;
  RecordProperty("logits_rel_error", fmt::format("{:.2e}", err));
}

std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> v;
  for (auto [f, io] : {std::pair{"casvit", "io.safetensors"}, std::pair{"casvit_224", "io.safetensors"},
                       std::pair{"casvit_224", "io_192x256.safetensors"}})
    for (const char* b : {"cpu", "ref"}) v.push_back({f, io, b});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Families, CasVitGolden, ::testing::ValuesIn(golden_cases()), [](const auto& info) {
  return info.param.folder + (info.param.io == "io.safetensors" ? "" : "_192x256") + "_" + info.param.backend;
});

MetaFormerConfig small_config(int d0) {
  return parse_config(fmt::format(R"({{"name": "casvit_small", "layout": "casvit", "num_classes": 5,
      "depths": [1, 1, 1, 1], "dims": [{}, {}, {}, {}], "mixers": "additive", "norms": "batch_norm",
      "mlp": {{"act": "gelu", "bias": true, "ratio": 4}},
      "stem": {{"type": "two_conv", "kernel_size": 3, "stride": 2, "padding": 1, "norm": "batch_norm", "act": "relu"}},
      "downsample": {{"kernel_size": 3, "stride": 2, "padding": 1, "norm": "batch_norm", "norm_after": true}},
      "head": {{"type": "linear", "norm": "batch_norm"}}, "input": {{"size": 64}}}})",
                                  d0, d0 + 4, d0 + 8, d0 + 12),
                      "casvit_small");
}

void randomize(MetaFormer& m) {
  uint64_t seed = 60;
  for (auto& [name, p] : m.named_parameters()) {
    if (p->integer) continue;
    const bool positive = p->buffer;
    p->value.copy_from(random_tensor(p->value.shape(), seed++, positive ? 0.5f : -0.5f, positive ? 1.5f : 0.5f));
  }
}

// As tests/test_model_backward.cpp: the derivative of the loss along a random direction in parameter
// space against central differences, on the ref backend (BatchNorm in training mode).
TEST(CasVit, DirectionalDerivativeMatchesFiniteDifferences) {
  MetaFormer model(small_config(8));
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

// Bad input: the right family's checkpoint for another variant (other widths) names the first tensor
// whose shape differs, with both shapes.
TEST(CasVit, CheckpointOfAnotherVariantNamesTheMismatchedTensor) {
  MetaFormer wide(small_config(12));
  const std::string path = (std::filesystem::temp_directory_path() / "mf_casvit_12.safetensors").string();
  save_weights(wide, path);
  MetaFormer narrow(small_config(8));
  try {
    load_weights(narrow, SafeTensors::open(path));
    FAIL() << "a width-12 checkpoint loaded into a width-8 CAS-ViT";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("patch_embed.0.weight (model [4, 3, 3, 3], file [6, 3, 3, 3])"), std::string::npos) << msg;
  }
  std::filesystem::remove(path);
}

// CAS-ViT's keys (network.0.0.mlp.fc1.weight) are also those of the original PoolFormer checkpoints,
// which the loader renames to timm's; a CAS-ViT checkpoint must load as it is (it was renamed, and
// refused, before the loader asked the model first).
TEST(CasVit, ItsCheckpointIsNotTakenForAnOriginalPoolFormerOne) {
  MetaFormer saved(small_config(8));
  randomize(saved);
  const std::string path = (std::filesystem::temp_directory_path() / "mf_casvit_8.safetensors").string();
  save_weights(saved, path);
  MetaFormer loaded(small_config(8));
  const LoadResult r = load_weights(loaded, SafeTensors::open(path));
  EXPECT_FALSE(r.renamed_from_original);
  const Tensor x = random_tensor({1, 64, 64, 3}, 2);
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  EXPECT_EQ(rel_error(loaded.run(ctx, x), saved.run(ctx, x)), 0.0);
  std::filesystem::remove(path);
}

// The fast backend against the reference one on the whole network (eval mode, BatchNorms folded).
TEST(CasVit, CpuMatchesRefOnARandomModel) {
  MetaFormer m(small_config(8));
  randomize(m);
  const Tensor x = random_tensor({2, 64, 96, 3}, 3);
  Ctx ref, cpu;
  ref.exec.backend = &get_backend("ref");
  cpu.exec.backend = &get_backend("cpu");
  EXPECT_LE(rel_error(m.run(cpu, x), m.run(ref, x)), 1e-5);
}

// The `additive` mixer inside the generic MetaFormer, as `metaformer compare --mixers additive` builds
// it: a training step runs and reaches every parameter.
TEST(CasVit, MixerTrainsInsideTheGenericMetaFormer) {
  MetaFormer m(parse_config(R"({"depths": [1, 1], "dims": [16, 32], "mixers": "additive", "num_classes": 3,
      "stem": {"kernel_size": 4, "stride": 4, "padding": 0}, "input": {"size": 32}})", "additive"));
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
