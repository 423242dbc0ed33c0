// AFFNet (model/affnet.h) against the authors' own model class (microsoft/TokenMixers, AffNet), run in
// float64 by tools/golden/make_affnet_golden.py: a reduced model (their class with a smaller layer
// table, as our mode "custom") checked after every layer and at the logits on both backends, with
// its weights loaded from their state_dict() (num_batches_tracked as int64); the three released
// networks' state-dict keys, shapes and parameter counts; and the loader's error for a checkpoint of
// another AFFNet variant.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "io/safetensors.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "model/zoo.h"
#include "test_util.h"
#include "train/targets.h"

namespace mf::test {
namespace {

// float32 against a float64 reference through ~20 layers with FFTs (docs/tolerances.md).
constexpr double kAffNetTolerance = 1e-4;

Tensor to_nhwc(const Tensor& x) {
  Exec ref{&get_backend("ref"), nullptr};
  return op::nchw_to_nhwc(ref, x);
}

struct AffCase {
  std::string dir;
  std::string io;  // the input and the authors' outputs
  std::string backend;
};

class AffNetGolden : public ::testing::TestWithParam<AffCase> {};

TEST_P(AffNetGolden, MatchesTheAuthorsAfterEveryLayer) {
  const auto& [name, io_file, backend] = GetParam();
  const std::string dir = data_path("affnet/" + name);
  MetaFormer model(load_config(dir + "/config.json"));
  // Their state_dict() as saved from their model: loads as is.
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  SafeTensors io = SafeTensors::open(dir + "/" + io_file);
  std::map<std::string, Tensor> seen;
  Ctx ctx;
  ctx.exec.backend = &get_backend(backend);
  ctx.on_output = [&](const std::string& n, const Tensor& t) { seen[n] = t.clone(); };
  const Tensor logits = model.forward_nchw(ctx, io.load("input"));
  for (const char* layer : {"conv_1", "layer_1", "layer_2", "layer_3", "layer_4", "layer_5", "conv_1x1_exp"}) {
    if (!io.contains(layer)) continue;  // the files keep the later layers' outputs (size)
    ASSERT_TRUE(seen.count(layer)) << layer;
    const Tensor expected = to_nhwc(io.load(layer));
    ASSERT_EQ(seen[layer].shape(), expected.shape()) << layer;
    EXPECT_LE(rel_error(seen[layer], expected), kAffNetTolerance) << name << " " << layer;
  }
  const Tensor expected = io.load("logits");
  ASSERT_EQ(logits.shape(), expected.shape());
  const double err = rel_error(logits, expected);
  EXPECT_LE(err, kAffNetTolerance) << name << " logits";
  RecordProperty("logits_rel_error", std::to_string(err));
}

INSTANTIATE_TEST_SUITE_P(Tiny, AffNetGolden,
                         ::testing::Values(AffCase{"tiny", "io.safetensors", "cpu"},
                                           AffCase{"tiny", "io.safetensors", "ref"},
                                           AffCase{"tiny", "io_64x96.safetensors", "cpu"},
                                           AffCase{"tiny_bn", "io.safetensors", "cpu"},
                                           AffCase{"tiny_bn", "io.safetensors", "ref"}),
                         [](const auto& info) {
                           return info.param.dir + (info.param.io == "io.safetensors" ? "_64x64_" : "_64x96_") +
                                  info.param.backend;
                         });

// The authors' AFFNet-ET, -T and AFFNet (modes xx_small, x_small, small) with 1000 classes: every
// state-dict key with its shape, in their order, and the parameter count (buffers excluded).
TEST(AffNet, KeysShapesAndCountsEqualTheAuthors) {
  std::ifstream f(data_path("affnet/counts.json"));
  ASSERT_TRUE(f.good());
  const nlohmann::json counts = nlohmann::json::parse(f);
  for (const char* name : {"affnet_et", "affnet_t", "affnet"}) {
    MetaFormer model(zoo_config(name));
    const nlohmann::json& theirs = counts.at(name);
    EXPECT_EQ(model.num_parameters(), theirs.at("params").get<int64_t>()) << name;
    const auto ours = model.named_parameters();
    ASSERT_EQ(ours.size(), theirs.at("keys").size()) << name;
    for (size_t i = 0; i < ours.size(); ++i) {
      const std::string key = theirs["keys"][i][0];
      std::vector<int64_t> dims = theirs["keys"][i][1];
      EXPECT_EQ(ours[i].first, key) << name << " #" << i;
      EXPECT_EQ(ours[i].second->value.shape(), Shape(dims)) << name << " " << key;
    }
  }
}

// SplitMix64 uniforms in [0, 1) at counters seed + 1 .. seed + n: tools/golden/make_affnet_golden.py's
// splitmix_uniform, so that the full-size models' weights and inputs need not be stored.
std::vector<double> splitmix_uniform(uint64_t seed, int64_t n) {
  std::vector<double> u(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = static_cast<uint64_t>(i + 1) * 0x9E3779B97F4A7C15ull + seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    u[static_cast<size_t>(i)] = static_cast<double>(z >> 11) * 0x1.0p-53;
  }
  return u;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The script's formula_weights: state-dict tensor k from splitmix_uniform(1000003 · (k + 1), numel).
void formula_weights(Module& model) {
  uint64_t k = 0;
  for (auto& [name, p] : model.named_parameters()) {
    const Shape& s = p->value.shape();
    const std::vector<double> u = splitmix_uniform(1000003 * ++k, s.numel());
    for (int64_t i = 0; i < s.numel(); ++i) {
      const double x = u[static_cast<size_t>(i)], unit = std::sqrt(3.0) * (2 * x - 1);
      double v;
      if (ends_with(name, ".b1") || ends_with(name, ".b2")) v = 0.1 * unit;
      else if (ends_with(name, ".w1") || ends_with(name, ".w2")) v = unit / std::sqrt(static_cast<double>(s[-1]));
      else if (ends_with(name, "num_batches_tracked")) v = 1234;
      else if (ends_with(name, "running_mean")) v = 0.1 * unit;
      else if (ends_with(name, "running_var")) v = 0.5 + x;
      else if (s.ndim() >= 2) v = unit / std::sqrt(static_cast<double>(s.numel() / s[0]));
      else if (ends_with(name, ".weight")) v = 1 + 0.2 * unit;
      else v = 0.1 * unit;
      p->value.data()[i] = static_cast<float>(v);
    }
    p->value.bump_version();
  }
}

// The generator's first numbers, printed by the script's splitmix_uniform: both sides draw the same.
TEST(AffNet, FormulaUniformsMatchTheScripts) {
  const std::vector<double> u = splitmix_uniform(777, 5);
  const std::vector<double> want{0.4759388389962902, 0.6525941185344672, 0.31186616352816166, 0.4924825768175368,
                                 0.0853197638644323};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_DOUBLE_EQ(u[i], want[i]) << i;
}

// The full-size AFFNet-ET, -T and AFFNet (1000 classes) at 224×224 and 192×256 against the
// authors' class in float64, with the formula's weights and input (batch 1): all three on the cpu
// backend, AFFNet-ET on the ref backend too (the ref backend is slow at full size; its agreement
// shows that both sides draw the same weights, independently of the cpu kernels). These maps
// (28×28×64, 24×32×64, ...) found the cpu irfft2's FFTW misuse (SpectralOps test).
TEST(AffNet, FullSizeLogitsMatchTheAuthors) {
  const std::string file = data_path("affnet/full_logits.safetensors");
  if (!std::filesystem::exists(file))  // committed from a device run (docs/affnet.md)
    FAIL() << "tests/data/affnet/full_logits.safetensors is missing: run "
                    "tools/golden/make_affnet_golden.py where torch is and copy it there";
  SafeTensors golden = SafeTensors::open(file);
  for (const char* backend : {"cpu", "ref"}) {
    Ctx ctx;
    ctx.exec.backend = &get_backend(backend);
    for (const std::string name : {"affnet_et", "affnet_t", "affnet"}) {
      if (std::string(backend) == "ref" && name != "affnet_et") continue;
      MetaFormer model(zoo_config(name));
      formula_weights(model);
      for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{224, 224}, {192, 256}}) {
        const std::vector<double> u = splitmix_uniform(777, 3 * h * w);
        Tensor x = Tensor::zeros({1, 3, h, w});
        for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = static_cast<float>(u[static_cast<size_t>(i)]);
        const Tensor logits = model.forward_nchw(ctx, x);
        const std::string key = fmt::format("{}.{}x{}", name, h, w);
        const Tensor expected = golden.load(key);
        ASSERT_EQ(logits.shape(), expected.shape()) << key;
        const double err = rel_error(logits, expected);
        EXPECT_LE(err, kAffNetTolerance) << key << " " << backend;
        RecordProperty(key + "." + backend, fmt::format("{:.3g}", err));
      }
    }
  }
}

// A checkpoint of the right family but another variant: the error names the first mismatched
// tensor with both shapes.
TEST(AffNet, AnotherVariantsCheckpointNamesTheFirstMismatch) {
  MetaFormer et(zoo_config("affnet_et"));
  initialize_parameters(et, 1);
  const std::string path = (std::filesystem::temp_directory_path() / "mf_affnet_et.safetensors").string();
  save_weights(et, path);
  MetaFormer t(zoo_config("affnet_t"));
  try {
    load_weights(t, SafeTensors::open(path));
    FAIL() << "loaded AFFNet-ET weights into AFFNet-T";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("mis-shaped (layer_1.0.block.exp_1x1.block.conv.weight (model [64, 16, 1, 1], file [32, "
                       "16, 1, 1])"),
              std::string::npos)
        << msg;
  }
  std::filesystem::remove(path);
}

// Training: the gradient of the loss along a random direction in every trainable parameter against
// central differences of the training-mode forward (BatchNorm with the batch's statistics, in the
// AFF blocks too: the _bn model), ref backend.
TEST(AffNet, TrainingGradientMatchesFiniteDifferences) {
  const std::string dir = data_path("affnet/tiny_bn");
  MetaFormer model(load_config(dir + "/config.json"));
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  const Tensor x = random_tensor({4, 64, 64, 3}, 11, 0.f, 1.f);
  const Tensor targets = smoothed_targets({3, 7, 1, 0}, model.config().num_classes, 0.1);
  Ctx ctx;
  ctx.exec.backend = &get_backend("ref");
  ctx.training = true;
  const DirectionalDerivative d = cross_entropy_derivative(model, ctx, x, targets);
  EXPECT_NEAR(d.numeric, d.analytic, 2e-2 * std::fabs(d.analytic));
}

TEST(AffNet, CustomLayersAreChecked) {
  auto expect_error = [](const std::string& json, const std::string& phrase) {
    try {
      MetaFormer m(parse_config(json, "cfg.json"));
      FAIL() << "accepted: " << json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"layout": "affnet", "affnet": {"mode": "tiny"}})", "unknown AFFNet mode 'tiny'");
  expect_error(R"({"layout": "affnet", "affnet": {"mode": "custom"}})", "with (and only with) mode 'custom'");
  expect_error(R"({"layout": "affnet", "affnet": {"mode": "custom", "layers": [{"type": "mv2", "out": 16}]}})",
               "AFFNet has 5 layers, not 1");
  expect_error(R"({"layout": "affnet", "affnet": {"mode": "small", "attn_norm": "layer_norm"}})",
               "attn_norm must be group_norm1");
}

}  // namespace
}  // namespace mf::test
