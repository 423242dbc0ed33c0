// 1-D MetaFormers (docs/sequences.md): sequence configs, the token and series stems, positions,
// causal attention, mixers on a 1 × L grid, whole-model gradients, and the clear errors for bad
// sequences. (Op and mixer gradients are in the registry-driven harnesses: op_cases.cpp,
// mixer_cases.cpp.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/dataset.h"
#include "io/npy.h"
#include "mixers/mixer.h"
#include "mixer_cases.h"
#include "model/metaformer.h"
#include "test_util.h"
#include "train/targets.h"

namespace mf::test {
namespace {

// A small token model: ids in [0, 12), learned positions for 16 tokens, causal attention.
const char* kTokenModel = R"({
  "name": "seq_tokens", "in_chans": 1, "num_classes": 3, "depths": [2], "dims": [16],
  "mixers": {"type": "attention", "head_dim": 8, "causal": true},
  "layout": "isotropic", "head": {"type": "token_norm_linear"}, "mlp": {"act": "gelu", "ratio": 2},
  "sequence": {"input": "tokens", "vocab_size": 12, "length": 16, "position": "learned"}
})";

// A small series model: 2 channels, patches of 4 steps every 2, sinusoidal positions, 1-D pooling.
const char* kSeriesModel = R"({
  "name": "seq_series", "in_chans": 2, "num_classes": 4, "depths": [2], "dims": [8],
  "mixers": {"type": "pooling", "pool_size": 3},
  "layout": "isotropic", "head": {"type": "token_norm_linear"}, "mlp": {"act": "gelu", "ratio": 2},
  "sequence": {"input": "series", "length": 20, "patch_size": 4, "patch_stride": 2, "position": "sinusoidal"}
})";

// A hierarchical token model: two stages (pooling, then attention) with a 1-D downsampling between
// them (a 1 × 3 convolution, stride 2 along the sequence), MetaFormer's pooled head.
const char* kHierarchicalModel = R"({
  "name": "seq_hier", "in_chans": 1, "num_classes": 3, "depths": [1, 1], "dims": [8, 16],
  "mixers": [{"type": "pooling", "pool_size": 3}, {"type": "attention", "head_dim": 8}],
  "mlp": {"act": "gelu", "ratio": 2},
  "sequence": {"input": "tokens", "vocab_size": 12, "length": 16, "position": "learned"}
})";

Ctx cpu_ctx() {
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  return ctx;
}

Tensor ids(const std::vector<std::vector<int>>& rows) {
  const auto B = static_cast<int64_t>(rows.size()), L = static_cast<int64_t>(rows[0].size());
  Tensor t = Tensor::empty({B, 1, L, 1});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < L; ++i) t.data()[b * L + i] = static_cast<float>(rows[static_cast<size_t>(b)][static_cast<size_t>(i)]);
  return t;
}

TEST(SequenceConfig, ParsesAndRoundTripsThroughJson) {
  for (const char* text : {kTokenModel, kSeriesModel}) {
    const MetaFormerConfig c = parse_config(text, "test");
    ASSERT_TRUE(c.is_sequence());
    EXPECT_EQ(parse_config(config_to_json(c).dump(), "round trip"), c);
  }
  const MetaFormerConfig s = parse_config(kSeriesModel, "test");
  EXPECT_EQ(s.sequence.tokens(20), 9);  // (20 - 4) / 2 + 1
}

TEST(SequenceConfig, RejectsInconsistentDescriptions) {
  auto err = [](const std::string& seq, const std::string& extra = "") {
    return error_of([&] {
      parse_config(R"({"depths": [1], "dims": [8], "mixers": "identity", "layout": "isotropic", "in_chans": 1,
                      "head": {"type": "token_norm_linear"}, "sequence": )" + seq + extra + "}",
                   "t");
    });
  };
  EXPECT_NE(err(R"({"input": "words", "length": 4})").find("'tokens' or 'series'"), std::string::npos);
  EXPECT_NE(err(R"({"input": "tokens", "length": 4})").find("vocab_size"), std::string::npos);
  EXPECT_NE(err(R"({"input": "series", "length": 4, "patch_size": 5})").find("patch_size"), std::string::npos);
  EXPECT_NE(err(R"({"input": "tokens", "vocab_size": 5, "length": 4, "position": "rotary"})").find("position"),
            std::string::npos);
  EXPECT_NE(err(R"({"input": "tokens", "vocab_size": 5, "length": 4, "lenght": 3})").find("unknown key 'lenght'"),
            std::string::npos);
  const std::string hier = error_of([] {
    parse_config(R"({"depths": [1, 1], "dims": [8, 16], "mixers": "identity", "in_chans": 2,
                    "sequence": {"input": "series", "length": 8, "channels": "independent"}})", "t");
  });
  EXPECT_NE(hier.find("independent channels need a series head"), std::string::npos) << hier;
}

TEST(SequenceModel, NamesItsStemParametersAndRunsBatches) {
  MetaFormer tokens(parse_config(kTokenModel, "t"));
  MetaFormer series(parse_config(kSeriesModel, "t"));
  auto shapes = [](MetaFormer& m) {
    std::map<std::string, Shape> out;
    for (auto& [n, p] : m.named_parameters()) out[n] = p->value.shape();
    return out;
  };
  auto t = shapes(tokens), s = shapes(series);
  EXPECT_EQ(t["stem.embed.weight"], (Shape{12, 16}));
  EXPECT_EQ(t["stem.pos_embed"], (Shape{16, 16}));
  EXPECT_EQ(s["stem.proj.weight"], (Shape{8, 2, 1, 4}));
  EXPECT_EQ(s["stem.proj.bias"], (Shape{8}));
  EXPECT_EQ(s.count("stem.pos_embed"), 0u);  // sinusoids are not parameters
  initialize_parameters(tokens, 1);
  initialize_parameters(series, 2);
  Ctx ctx = cpu_ctx();
  // Shorter sequences than the nominal length work with every mixer that is not tied to a size.
  EXPECT_EQ(tokens.run(ctx, ids({{1, 2, 3, 11, 0}, {4, 4, 4, 4, 4}})).shape(), (Shape{2, 3}));
  EXPECT_EQ(series.run(ctx, random_tensor({3, 1, 13, 2}, 5)).shape(), (Shape{3, 4}));
  // NCHW ([B, C, 1, L]) as `metaformer run` passes it.
  EXPECT_EQ(series.forward_nchw(ctx, random_tensor({1, 2, 1, 20}, 6)).shape(), (Shape{1, 4}));
}

// Hierarchical: the downsampling is 1-D (timm's stages.N.downsample keys, a [out, in, 1, 3] kernel),
// and any length runs (the second stage on half the tokens).
TEST(SequenceModel, HierarchicalStagesDownsampleAlongTheSequence) {
  MetaFormer m(parse_config(kHierarchicalModel, "t"));
  initialize_parameters(m, 1);
  std::map<std::string, Shape> shapes;
  for (auto& [n, p] : m.named_parameters()) shapes[n] = p->value.shape();
  EXPECT_EQ(shapes["stages.1.downsample.conv.weight"], (Shape{16, 8, 1, 3}));
  EXPECT_EQ(shapes["stages.1.downsample.norm.weight"], (Shape{8}));
  Ctx ctx = cpu_ctx();
  EXPECT_EQ(m.run(ctx, ids({{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4}})).shape(), (Shape{1, 3}));
  EXPECT_EQ(m.run(ctx, ids({{1, 2, 3, 4, 5}, {6, 7, 8, 9, 10}})).shape(), (Shape{2, 3}));
}

TEST(SequenceModel, RefusesBadSequencesWithOneClearError) {
  MetaFormer tokens(parse_config(kTokenModel, "t"));
  MetaFormer series(parse_config(kSeriesModel, "t"));
  initialize_parameters(tokens, 1);
  initialize_parameters(series, 2);
  Ctx ctx = cpu_ctx();
  const std::vector<std::pair<std::string, std::function<void()>>> cases{
      {"longer than the learned position table allows",
       [&] { tokens.run(ctx, ids({std::vector<int>(17, 1)})); }},
      {"token id 12 at position 3 of sequence 1 is outside the vocabulary",
       [&] { tokens.run(ctx, ids({{0, 1, 2, 3}, {0, 1, 2, 12}})); }},
      {"token id -1 at position 0", [&] { tokens.run(ctx, ids({{-1, 1}})); }},
      {"token id 2.5", [&] { Tensor t = ids({{1, 1}}); t.data()[1] = 2.5f; tokens.run(ctx, t); }},
      {"the series has a NaN at step 7, channel 1 of sample 2",
       [&] {
         Tensor x = random_tensor({3, 1, 12, 2}, 1);
         x.data()[(2 * 12 + 7) * 2 + 1] = std::numeric_limits<float>::quiet_NaN();
         series.run(ctx, x);
       }},
      {"a series of 3 steps is shorter than one patch (4 steps)",
       [&] { series.run(ctx, random_tensor({1, 1, 3, 2}, 1)); }},
      {"takes 2 channel(s) per step; got 3", [&] { series.run(ctx, random_tensor({1, 1, 8, 3}, 1)); }},
  };
  for (auto& [phrase, f] : cases) {
    const std::string e = error_of(f);
    EXPECT_NE(e.find(phrase), std::string::npos) << "expected '" << phrase << "', got '" << e << "'";
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

// Causal attention: token i's output does not change when any later token changes.
TEST(SequenceMixers, CausalAttentionIgnoresTheFuture) {
  auto m = make_mixer({"attention", {{"head_dim", 4}, {"causal", true}}, 8, 1, 10});
  Ctx ctx = cpu_ctx();
  Tensor x = random_tensor({2, 1, 10, 8}, 3);
  const Tensor y = m->run(ctx, x);
  for (int64_t c = 0; c < 8; ++c) x.data()[(1 * 10 + 6) * 8 + c] += 1.f;  // token 6 of sample 1
  const Tensor y2 = m->run(ctx, x);
  for (int64_t t = 0; t < 10; ++t) {
    double diff = 0;
    for (int64_t c = 0; c < 8; ++c) diff += std::fabs(y.data()[(10 + t) * 8 + c] - y2.data()[(10 + t) * 8 + c]);
    if (t < 6) EXPECT_EQ(diff, 0.0) << "token " << t;
    else EXPECT_GT(diff, 1e-4) << "token " << t;
  }
}

// On a 1 × L grid PoolFormer's pooling is a 1-D window: avg over the k neighbours that exist
// (count_include_pad=False), minus the token.
TEST(SequenceMixers, PoolingOnOneRowIsAOneDimensionalWindow) {
  auto m = make_mixer({"pooling", {{"pool_size", 5}}, 3, 1, 9});
  Ctx ctx = cpu_ctx();
  const Tensor x = random_tensor({2, 1, 9, 3}, 4);
  const Tensor y = m->run(ctx, x);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 9; ++t)
      for (int64_t c = 0; c < 3; ++c) {
        double sum = 0;
        int count = 0;
        for (int64_t s = std::max<int64_t>(0, t - 2); s <= std::min<int64_t>(8, t + 2); ++s, ++count)
          sum += x.data()[(b * 9 + s) * 3 + c];
        EXPECT_NEAR(y.data()[(b * 9 + t) * 3 + c], sum / count - x.data()[(b * 9 + t) * 3 + c], 1e-6);
      }
}

TEST(SequenceModel, SinusoidalPositionsAreTheTransformers) {
  MetaFormer series(parse_config(kSeriesModel, "t"));
  initialize_parameters(series, 2);
  Ctx ctx = cpu_ctx();
  Tensor stem_out;
  ctx.on_output = [&](const std::string& path, const Tensor& t) {
    if (path == "stem") stem_out = t.clone();
  };
  const Tensor x = random_tensor({1, 1, 20, 2}, 8);
  series.run(ctx, x);
  // Without positions: the patch embedding alone (stem.proj's output).
  Tensor proj_out;
  ctx.on_output = [&](const std::string& path, const Tensor& t) {
    if (path == "stem.proj") proj_out = t.clone();
  };
  series.run(ctx, x);
  ASSERT_EQ(stem_out.shape(), (Shape{1, 1, 9, 8}));
  for (int64_t n = 0; n < 9; ++n)
    for (int64_t i = 0; i < 4; ++i) {
      const double angle = static_cast<double>(n) / std::pow(10000.0, 2.0 * static_cast<double>(i) / 8.0);
      EXPECT_NEAR(stem_out.data()[n * 8 + 2 * i] - proj_out.data()[n * 8 + 2 * i], std::sin(angle), 1e-6);
      EXPECT_NEAR(stem_out.data()[n * 8 + 2 * i + 1] - proj_out.data()[n * 8 + 2 * i + 1], std::cos(angle), 1e-6);
    }
}

// Whole-model backward of both stems (embedding and position-table gradients included) along a
// random direction in parameter space, against central differences of the loss.
TEST(SequenceModel, BackwardMatchesFiniteDifferences) {
  for (const char* text : {kTokenModel, kSeriesModel, kHierarchicalModel}) {
    MetaFormer model(parse_config(text, "t"));
    initialize_parameters(model, 3);
    const bool tokens = model.config().sequence.input == "tokens";
    const Tensor x = tokens ? ids({{1, 5, 7, 11, 0, 3, 3, 2}, {9, 9, 1, 0, 4, 6, 8, 10}}) : random_tensor({2, 1, 14, 2}, 4);
    const Tensor targets = smoothed_targets({1, 2}, model.config().num_classes, 0.1);
    Ctx ctx;
    ctx.exec.backend = &get_backend("ref");
    auto loss = [&](bool backward) {
      ctx.training = backward;
      Tensor logits = model.run(ctx, x), dl;
      const double l = op::cross_entropy(ctx.exec, logits, targets, dl);
      if (backward) model.backward(ctx, dl);
      return l;
    };
    const DirectionalDerivative d = directional_derivative(model, loss, 1e-3f);
    EXPECT_NEAR(d.numeric, d.analytic, 1e-2 * std::fabs(d.analytic)) << model.config().name;
  }
}

// ---------------------------------------------------------------------------------------- ListOps

TEST(ListOps, IsDeterministicAndEvaluatesItsExpressions) {
  const ListOpsSpec spec = parse_listops_spec("listops-64");
  EXPECT_EQ(spec.max_length, 64);
  EXPECT_EQ(spec.min_length, 16);
  const DataSplits a = open_listops(spec), b = open_listops(spec);
  Rng unused;
  for (int64_t i = 0; i < 50; ++i) {
    const Sample x = a.train->get(i, true, unused), y = b.train->get(i, true, unused);
    ASSERT_EQ(x.image.shape(), (Shape{1, 64, 1}));
    EXPECT_EQ(rel_error(x.image, y.image), 0.0);
    EXPECT_EQ(x.label, a.train->label(i));
    // Re-evaluate the token ids with a stack: the label is the expression's value.
    std::vector<std::vector<int>> stack{{}};
    std::vector<int> ops;
    int64_t n = 0;
    for (; n < 64 && x.image.data()[n] != 0.f; ++n) {
      const int t = static_cast<int>(x.image.data()[n]);
      if (t >= 1 && t <= 10) {
        stack.back().push_back(t - 1);
      } else if (t >= 11 && t <= 14) {
        ops.push_back(t);
        stack.emplace_back();
      } else {
        ASSERT_EQ(t, 15);
        std::vector<int> v = stack.back();
        stack.pop_back();
        std::sort(v.begin(), v.end());
        int r = 0;
        switch (ops.back()) {
          case 11: r = v.front(); break;
          case 12: r = v.back(); break;
          case 13: r = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2; break;
          default: for (int q : v) r += q; r %= 10;
        }
        ops.pop_back();
        stack.back().push_back(r);
      }
    }
    EXPECT_GE(n, 16);
    for (int64_t k = n; k < 64; ++k) EXPECT_EQ(x.image.data()[k], 0.f);  // padding
    ASSERT_EQ(stack.size(), 1u);
    ASSERT_EQ(stack[0].size(), 1u);
    EXPECT_EQ(stack[0][0], x.label) << "sample " << i;
  }
  EXPECT_NE(error_of([] { parse_listops_spec("listops-x"); }).find("listops-N"), std::string::npos);
  EXPECT_NE(error_of([] { parse_listops_spec("listops-8"); }).find("16 to 100000"), std::string::npos);
}

// ------------------------------------------------------------------------------------ command line

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

TEST(SequenceCli, RunRefusesBadIdsWithOneLine) {
  TempDir dir;
  write_text(dir.file("m.json"), kTokenModel);
  ASSERT_EQ(run_cli({"init", "--config", dir.file("m.json"), "--out", dir.file("w.safetensors")}).exit_code, 0);
  Tensor x = Tensor::zeros({1, 1, 1, 5});  // NCHW [B, 1, 1, L]
  x.data()[4] = 99;
  write_npy(dir.file("x.npy"), x);
  CliResult r = run_cli({"run", "--config", dir.file("m.json"), "--weights", dir.file("w.safetensors"), "--input",
                         dir.file("x.npy"), "--output", dir.file("y.npy")});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("token id 99 at position 4 of sequence 0 is outside the vocabulary"), std::string::npos) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  CliResult info = run_cli({"info", "--config", dir.file("m.json")});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("at length 16"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("token ids of 16 ids (16 tokens)"), std::string::npos) << info.out;
  x.data()[4] = 3;
  write_npy(dir.file("x.npy"), x);
  r = run_cli({"run", "--config", dir.file("m.json"), "--weights", dir.file("w.safetensors"), "--input",
               dir.file("x.npy"), "--output", dir.file("y.npy")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// A short training run on ListOps through the CLI, then eval of its checkpoint, and a two-mixer
// comparison: the sequence task plugs into train, eval and compare.
TEST(SequenceCli, TrainsEvaluatesAndComparesOnListOps) {
  TempDir dir;
  const std::string base = source_path("configs/compare_listops.json");
  CliResult r = run_cli({"train", "--config", base, "--data", "listops-32", "--epochs", "2", "--batch", "32",
                         "--subset", "256", "--eval-subset", "64", "--lr", "3e-3", "--threads", "1", "--workers", "0",
                         "--no-progress", "--out", dir.file("run")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("nominal length is 32"), std::string::npos) << r.out;
  std::ifstream metrics(dir.file("run/metrics.jsonl"));
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(metrics, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_LT(rows[1]["train_loss"].get<double>(), rows[0]["train_loss"].get<double>());
  CliResult ev = run_cli({"eval", "--config", dir.file("run/config.json"), "--weights", dir.file("run/model.safetensors"),
                          "--data", "listops-32", "--threads", "1"});
  ASSERT_EQ(ev.exit_code, 0) << ev.err;
  EXPECT_NE(ev.out.find("top-1"), std::string::npos) << ev.out;
  CliResult cmp = run_cli({"compare", "--base", base, "--mixers", "identity,s6", "--data", "listops-32", "--epochs", "1",
                           "--batch", "32", "--subset", "64", "--eval-subset", "32", "--threads", "1", "--workers", "0",
                           "--latency-runs", "1", "--throughput-runs", "1", "--no-progress", "--out", dir.file("cmp")});
  ASSERT_EQ(cmp.exit_code, 0) << cmp.err;
  EXPECT_TRUE(std::filesystem::exists(dir.file("cmp/report.md")));
  // An image model on a sequence task, and the reverse: one clear line each.
  CliResult img = run_cli({"train", "--model", "poolformerv2_s12", "--data", "listops-32", "--epochs", "1",
                           "--out", dir.file("bad")});
  EXPECT_EQ(img.exit_code, 1);
  EXPECT_NE(img.err.find("token-sequence task"), std::string::npos) << img.err;
  EXPECT_EQ(count_lines(img.err), 1) << img.err;
  CliResult seq = run_cli({"train", "--config", base, "--data", "long-range", "--epochs", "1", "--out", dir.file("bad2")});
  EXPECT_EQ(seq.exit_code, 1);
  EXPECT_NE(seq.err.find("takes sequences"), std::string::npos) << seq.err;
  EXPECT_EQ(count_lines(seq.err), 1) << seq.err;
}

// The s6 mixer learns: a Mamba-style model (one "mamba" block, RMSNorm) on short ListOps lowers its
// training loss over two epochs.
TEST(SequenceCli, S6TrainingLowersTheLossOnListOps) {
  TempDir dir;
  write_text(dir.file("s6.json"), R"({
    "name": "listops_s6", "in_chans": 1, "num_classes": 10, "depths": [1], "dims": [32], "layout": "isotropic",
    "block": "mamba", "norms": "rms_norm", "head": {"type": "token_norm_linear", "norm": "rms_norm"},
    "mixers": {"type": "s6", "d_state": 8, "chunk": 16},
    "sequence": {"input": "tokens", "vocab_size": 16, "length": 32}})");
  CliResult r = run_cli({"train", "--config", dir.file("s6.json"), "--data", "listops-32", "--epochs", "2", "--batch",
                         "32", "--subset", "256", "--eval-subset", "64", "--lr", "3e-3", "--threads", "1", "--workers",
                         "0", "--no-progress", "--out", dir.file("run")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream metrics(dir.file("run/metrics.jsonl"));
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(metrics, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_LT(rows[1]["train_loss"].get<double>(), rows[0]["train_loss"].get<double>());
}

}  // namespace
}  // namespace mf::test
