// Hydra's bidirectional SSM, PoNet's pooling mixer and MambaMixer's channel scan (docs/sequences.md).
// Their gradients and cpu-vs-ref agreement are checked by the registry-driven MixerGradient and
// BackendOps/BackendGrads cases; here: parity with the float64 PyTorch transcriptions of the papers
// (tools/golden/make_hydra_golden.py, make_ponet_golden.py; skipped until the golden files are in
// tests/data/sequence_mixers), the channel scan in the MLP's place, a short training run of each on
// ListOps, and `bench --lengths`.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/file.h"
#include "io/safetensors.h"
#include "mixers/mixer.h"
#include "model/config.h"
#include "model/metaformer.h"
#include "test_util.h"

namespace mf::test {
namespace {

struct Golden {
  nlohmann::json config;
  SafeTensors params, io;
};

bool golden_present(const std::string& family) {
  return std::filesystem::exists(data_path("sequence_mixers/" + family + "_io.safetensors"));
}

Golden open_golden(const std::string& family) {
  const std::string dir = data_path("sequence_mixers");
  std::ifstream f(dir + "/" + family + "_config.json");
  return {nlohmann::json::parse(f), SafeTensors::open(dir + "/" + family + "_mixer.safetensors"),
          SafeTensors::open(dir + "/" + family + "_io.safetensors")};
}

// The golden's mixer with its options (plus `extra`), every parameter loaded from the file; the
// file holds exactly the mixer's parameters.
std::unique_ptr<TokenMixer> load_mixer(const Golden& g, const nlohmann::json& extra = nlohmann::json::object()) {
  nlohmann::json options = g.config["options"];
  const std::string type = options["type"];
  options.erase("type");
  options.update(extra);
  auto m = MixerRegistry::get().create(type, MixerContext{g.config["dim"].get<int64_t>(), 0, 1, 1, options});
  m->assign_paths("mixer");
  size_t loaded = 0;
  for (auto& [name, p] : m->named_parameters()) {
    EXPECT_TRUE(g.params.contains(name)) << name;
    const Tensor t = g.params.load(name);
    EXPECT_EQ(t.shape(), p->value.shape()) << name;
    p->value.copy_from(t);
    p->grad = Tensor::zeros(p->value.shape());
    ++loaded;
  }
  EXPECT_EQ(loaded, g.params.names().size());
  return m;
}

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

Tensor as_grid(const Tensor& t) { return t.reshape({t.dim(0), 1, t.dim(1), t.dim(2)}); }

// Output and every gradient of <output, g> within 1e-4 relative, on ref and cpu, with the scan
// chunks given (Hydra's golden sequence, 40 tokens, crosses 16-token chunks).
void check_against_golden(const std::string& family, const std::vector<nlohmann::json>& variants) {
  const Golden g = open_golden(family);
  for (const auto& extra : variants)
    for (const char* backend : {"ref", "cpu"}) {
      const std::string label = std::string(backend) + " " + extra.dump();
      auto m = load_mixer(g, extra);
      Ctx ctx;
      ctx.exec.backend = &get_backend(backend);
      const Tensor want = as_grid(g.io.load("output"));
      EXPECT_LE(rel_error(m->run(ctx, as_grid(g.io.load("input"))), want), 1e-4) << label;
      ctx.training = true;
      const Tensor y = m->run(ctx, as_grid(g.io.load("input")));
      EXPECT_LE(rel_error(y, want), 1e-4) << label;
      const Tensor dx = m->backward(ctx, as_grid(g.io.load("grad.cotangent")));
      EXPECT_LE(rel_error(dx, as_grid(g.io.load("grad.input"))), 1e-4) << label;
      for (auto& [name, p] : m->named_parameters())
        EXPECT_LE(rel_error(p->grad, g.io.load("grad." + name)), 1e-4) << label << " " << name;
    }
}

TEST(HydraGolden, MixerAndGradientsMatchThePapersDefinition) {
  if (!golden_present("hydra")) FAIL() << "golden files not present (tools/golden/make_hydra_golden.py)";
  check_against_golden("hydra", {nlohmann::json::object(), nlohmann::json{{"chunk", 16}}, nlohmann::json{{"chunk", 3}}});
}

TEST(PonetGolden, MixerAndGradientsMatchThePapersDefinition) {
  if (!golden_present("ponet")) FAIL() << "golden files not present (tools/golden/make_ponet_golden.py)";
  check_against_golden("ponet", {nlohmann::json::object()});
}

// Hydra's shift: the forward scan's output for token t lands on t + 1 and the backward's on t - 1,
// so a token reaches its own output only through the diagonal. With the diagonal zeroed (fc_D = 0,
// D = 0), a one-token sequence's mixed value is zero and the output is out_proj's bias alone.
TEST(SequenceMixers, HydraOneTokenWithoutDiagonalIsZero) {
  auto m = MixerRegistry::get().create("hydra", MixerContext{4, 0, 1, 1, nlohmann::json{{"d_state", 2}, {"bias", true}}});
  for (auto& [name, p] : m->named_parameters())
    if (name == "fc_D.weight" || name == "D") p->value.zero();
  Ctx ctx;
  ctx.exec.backend = &get_backend("ref");
  const Tensor y = m->run(ctx, Tensor::full({1, 1, 1, 4}, 0.7f));
  // out_proj's bias alone: the scans have nothing to read, the diagonal is zero.
  const Tensor bias = m->named_parameters().back().second->value;
  for (int64_t c = 0; c < 4; ++c) EXPECT_NEAR(y.data()[c], bias.data()[c], 1e-6);
}

// "mlp": {"mixer": ...} puts a registered mixer in the MLP's place under the MLP's name, and the
// description survives a round trip through JSON.
TEST(ChannelScan, ReplacesTheMlpAndRoundTrips) {
  const std::string text = R"({"name": "cs", "in_chans": 1, "num_classes": 3, "depths": [1], "dims": [8],
    "layout": "isotropic", "head": {"type": "token_norm_linear"}, "mixers": "pooling",
    "mlp": {"mixer": {"type": "channel_scan", "d_state": 4}},
    "sequence": {"input": "tokens", "vocab_size": 10, "length": 12}})";
  const MetaFormerConfig c = parse_config(text, "cs");
  EXPECT_EQ(c.mlp_mixer.type, "channel_scan");
  EXPECT_EQ(parse_config(config_to_json(c).dump(), "again"), c);
  MetaFormer model(c);
  bool found = false;
  for (auto& [name, p] : model.named_parameters()) {
    EXPECT_EQ(name.find("fc1"), std::string::npos) << name;
    found = found || name == "blocks.0.mlp.scan.A_log";
  }
  EXPECT_TRUE(found);
  EXPECT_THROW(parse_config(R"({"name": "x", "depths": [1], "dims": [8], "mixers": "pooling",
                                "mlp": {"mixer": {"kind": "channel_scan"}}})", "x"), Error);
  // A block without an MLP branch has nothing to replace.
  try {
    parse_config(R"({"name": "x", "depths": [1], "dims": [8], "mixers": "s6", "block": "mamba", "norms": "rms_norm",
                     "mlp": {"mixer": "channel_scan"}})", "x");
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mlp.mixer replaces the MLP, but the 'mamba' block has none"), std::string::npos)
        << e.what();
  }
}

// One short training run per new mixer on ListOps-32: the training loss falls over two epochs.
void expect_training_lowers_loss(const std::string& name, const std::string& config) {
  TempDir dir;
  write_text(dir.file(name + ".json"), config);
  CliResult r = run_cli({"train", "--config", dir.file(name + ".json"), "--data", "listops-32", "--epochs", "2",
                         "--batch", "32", "--subset", "256", "--eval-subset", "64", "--lr", "3e-3", "--threads", "1",
                         "--workers", "0", "--no-progress", "--out", dir.file("run")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream metrics(dir.file("run/metrics.jsonl"));
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(metrics, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_LT(rows[1]["train_loss"].get<double>(), rows[0]["train_loss"].get<double>()) << name;
}

TEST(SequenceMixerTraining, HydraLowersTheLossOnListOps) {
  expect_training_lowers_loss("hydra", R"({
    "name": "listops_hydra", "in_chans": 1, "num_classes": 10, "depths": [1], "dims": [32], "layout": "isotropic",
    "block": "mamba", "norms": "rms_norm", "head": {"type": "token_norm_linear", "norm": "rms_norm"},
    "mixers": {"type": "hydra", "d_state": 8, "chunk": 16, "headdim": 16},
    "sequence": {"input": "tokens", "vocab_size": 16, "length": 32}})");
}

TEST(SequenceMixerTraining, PonetLowersTheLossOnListOps) {
  expect_training_lowers_loss("ponet", R"({
    "name": "listops_ponet", "in_chans": 1, "num_classes": 10, "depths": [1], "dims": [32], "layout": "isotropic",
    "head": {"type": "token_norm_linear"}, "mixers": {"type": "ponet", "head_dim": 16, "segments": 4},
    "mlp": {"act": "gelu", "ratio": 2}, "sequence": {"input": "tokens", "vocab_size": 16, "length": 32}})");
}

TEST(SequenceMixerTraining, ChannelScanInTheMlpsPlaceLowersTheLossOnListOps) {
  expect_training_lowers_loss("channel_scan", R"({
    "name": "listops_channel_scan", "in_chans": 1, "num_classes": 10, "depths": [1], "dims": [16],
    "layout": "isotropic", "head": {"type": "token_norm_linear"}, "mixers": "pooling",
    "mlp": {"mixer": {"type": "channel_scan", "d_inner": 8, "d_state": 4}},
    "sequence": {"input": "tokens", "vocab_size": 16, "length": 32}})");
}

// bench --lengths: one row per length for a sequence model, named with it; an image model is
// refused with one line.
TEST(SequenceBench, LengthsGiveOneRowEach) {
  TempDir dir;
  write_text(dir.file("m.json"), R"({"name": "bench_ponet", "in_chans": 1, "num_classes": 2, "depths": [1],
    "dims": [8], "layout": "isotropic", "head": {"type": "token_norm_linear"}, "mixers": {"type": "ponet"},
    "sequence": {"input": "tokens", "vocab_size": 4, "length": 16}})");
  CliResult r = run_cli({"bench", "--config", dir.file("m.json"), "--lengths", "16,64", "--batch", "1", "--runs", "1",
                         "--warmup", "0", "--threads", "1", "--json", dir.file("b.json")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("bench_ponet L=16 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bench_ponet L=64 |"), std::string::npos) << r.out;
  std::ifstream f(dir.file("b.json"));
  const auto j = nlohmann::json::parse(f);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[1]["length"].get<int64_t>(), 64);
  CliResult bad = run_cli({"bench", "--model", "poolformerv2_s12", "--lengths", "16", "--batch", "1", "--runs", "1",
                           "--warmup", "0", "--resolution", "32"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("is not a sequence model"), std::string::npos) << bad.err;
  EXPECT_EQ(count_lines(bad.err), 1) << bad.err;
  for (const char* garbage : {"16,x", "0"}) {  // not a number; out of range
    CliResult r2 = run_cli({"bench", "--config", dir.file("m.json"), "--lengths", garbage, "--batch", "1"});
    EXPECT_EQ(r2.exit_code, 1) << garbage;
    EXPECT_NE(r2.err.find("--lengths"), std::string::npos) << r2.err;
    EXPECT_EQ(count_lines(r2.err), 1) << r2.err;
  }
}

}  // namespace
}  // namespace mf::test
