// Time-series MetaFormers (docs/sequences.md): the time-mixing mixers (time_mlp, gated_time_mlp),
// independent channels, std scaling, the forecasting and channel-mean heads, forecasting's MSE
// training path, and the parity of a PatchTSMixer loaded from transformers' state dict
// (tools/golden/make_patchtsmixer_golden.py: float64 PyTorch, ≤ 1e-4 relative).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "mixers/mixer.h"
#include "model/config.h"
#include "model/metaformer.h"
#include "model/patchtsmixer.h"
#include "test_util.h"
#include "train/forecast.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace mf::test {
namespace {

// 3 channels of 30 steps, patches of 8 every 4 (6 patches, the first 2 steps left out), gated
// time mixing, std scaling, a 5-step forecast.
constexpr const char* kForecaster = R"({
  "name": "ts_forecast", "in_chans": 3, "depths": [2], "dims": [8], "layout": "isotropic",
  "mixers": {"type": "gated_time_mlp"}, "norms": {"type": "layer_norm", "eps": 1e-5},
  "mlp": {"act": "gelu", "bias": true, "ratio": 2, "gate": true},
  "head": {"type": "forecast", "horizon": 5},
  "sequence": {"input": "series", "length": 30, "patch_size": 8, "patch_stride": 4, "channels": "independent",
               "scaling": "std"}
})";

Ctx cpu_ctx(const char* backend = "cpu") {
  Ctx ctx;
  ctx.exec.backend = &get_backend(backend);
  return ctx;
}

TEST(TimeSeries, TimeMlpMixesEachRowOnItsOwn) {
  for (const char* type : {"time_mlp", "gated_time_mlp"}) {
    auto m = MixerRegistry::get().create(type, MixerContext{4, 0, 3, 6, nlohmann::json::object()});
    initialize_parameters(*m, 1);
    Ctx ctx = cpu_ctx();
    Tensor x = random_tensor({2, 3, 6, 4}, 3);
    const Tensor y = m->run(ctx, x);
    x.data()[(1 * 3 + 1) * 6 * 4 + 2 * 4 + 1] += 1.f;  // sample 1, row 1, token 2, channel 1
    const Tensor y2 = m->run(ctx, x);
    for (int64_t i = 0; i < y.numel(); ++i) {
      const int64_t c = i % 4, row = (i / 24) % 3, b = i / 72;
      if (b != 1 || row != 1 || c != 1) {
        EXPECT_EQ(y.data()[i], y2.data()[i]) << type << " " << i;
      }
    }
    EXPECT_NE(y.data()[(1 * 3 + 1) * 24 + 5 * 4 + 1], y2.data()[(1 * 3 + 1) * 24 + 5 * 4 + 1]) << type;
    // A row of another length is refused (the token MLP is built for the nominal length).
    EXPECT_THROW(m->run(ctx, random_tensor({1, 1, 7, 4}, 1)), Error) << type;
  }
}

TEST(TimeSeries, TsMixerTimeMixingIsOneLinearMapAndRelu) {
  auto m = MixerRegistry::get().create("time_mlp", MixerContext{3, 0, 1, 5, {{"layers", 1}}});
  std::vector<std::string> names;
  for (auto& [name, p] : m->named_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"fc1.weight", "fc1.bias"}));
  initialize_parameters(*m, 2);
  Ctx ctx = cpu_ctx();
  const Tensor x = random_tensor({1, 1, 5, 3}, 4);
  const Tensor y = m->run(ctx, x);
  const auto params = m->named_parameters();
  const Tensor& w = params[0].second->value;
  const Tensor& b = params[1].second->value;
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t c = 0; c < 3; ++c) {
      double s = b.data()[t];
      for (int64_t k = 0; k < 5; ++k) s += w.data()[t * 5 + k] * x.data()[k * 3 + c];
      EXPECT_NEAR(y.data()[t * 3 + c], std::max(0.0, s), 1e-6);
    }
}

TEST(TimeSeries, ConfigRoundTripsThroughJson) {
  const MetaFormerConfig c = parse_config(kForecaster, "t");
  EXPECT_EQ(parse_config(config_to_json(c).dump(), "again"), c);
  EXPECT_EQ(c.sequence.channels, "independent");
  EXPECT_EQ(c.head.horizon, 5);
  EXPECT_TRUE(c.mlp_gate);
}

TEST(TimeSeries, ConfigErrorsNameTheField) {
  const auto err = [](const std::string& patch) {
    nlohmann::json j = nlohmann::json::parse(kForecaster);
    j.merge_patch(nlohmann::json::parse(patch));
    try {
      parse_config(j.dump(), "t");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err(R"({"sequence": {"channels": "split"}})").find("sequence.channels"), std::string::npos);
  EXPECT_NE(err(R"({"sequence": {"scaling": "mean"}})").find("sequence.scaling"), std::string::npos);
  EXPECT_NE(err(R"({"head": {"horizon": 0}})").find("head.horizon"), std::string::npos);
  EXPECT_NE(err(R"({"head": {"type": "token_norm_linear", "horizon": 0}})").find("independent channels need"),
            std::string::npos);
  EXPECT_NE(err(R"({"sequence": {"input": "tokens", "vocab_size": 4, "patch_size": 1, "patch_stride": 1,
                 "channels": "mixed", "scaling": "none"}, "in_chans": 1})").find("for series models"),
            std::string::npos);
}

TEST(TimeSeries, ForecastShapesAndChannelIndependence) {
  MetaFormer m(parse_config(kForecaster, "t"));
  initialize_parameters(m, 3);
  Ctx ctx = cpu_ctx();
  Tensor x = random_tensor({2, 1, 30, 3}, 5, -2.f, 2.f);
  const Tensor y = m.run(ctx, x);
  ASSERT_EQ(y.shape(), (Shape{2, 5, 3}));
  // Channel 2 of sample 0 changed: only that channel's forecast moves.
  x.data()[(0 * 30 + 17) * 3 + 2] += 0.5f;
  const Tensor y2 = m.run(ctx, x);
  for (int64_t i = 0; i < y.numel(); ++i) {
    if (i / 15 == 0 && i % 3 == 2)
      EXPECT_NE(y.data()[i], y2.data()[i]) << i;
    else
      EXPECT_EQ(y.data()[i], y2.data()[i]) << i;
  }
  // NCHW, as `metaformer run` gives it: [B, C, 1, L].
  EXPECT_EQ(m.forward_nchw(ctx, random_tensor({1, 3, 1, 30}, 6)).shape(), (Shape{1, 5, 3}));
}

TEST(TimeSeries, PatchesEndAtTheLastStep) {
  // 30 steps, patches of 8 every 4: PatchTSMixer keeps the last 28 steps. Without scaling the first
  // two steps then change nothing; the third does.
  nlohmann::json j = nlohmann::json::parse(kForecaster);
  j["sequence"]["scaling"] = "none";
  MetaFormer m(parse_config(j.dump(), "t"));
  initialize_parameters(m, 4);
  Ctx ctx = cpu_ctx();
  Tensor x = random_tensor({1, 1, 30, 3}, 7);
  const Tensor y = m.run(ctx, x);
  for (int64_t c = 0; c < 3; ++c) x.data()[0 * 3 + c] += 1.f, x.data()[1 * 3 + c] -= 1.f;
  EXPECT_EQ(rel_error(m.run(ctx, x), y), 0.0);
  x.data()[2 * 3 + 1] += 1.f;
  EXPECT_GT(rel_error(m.run(ctx, x), y), 0.0);
}

TEST(TimeSeries, StdScalingMapsTheForecastBack) {
  // scale(x) standardises each channel; the forecast of a·x + b is then a·f + b with a = its ratio of
  // scales (exact up to the 1e-5 inside the square root, negligible for a variance of ~1).
  MetaFormer m(parse_config(kForecaster, "t"));
  initialize_parameters(m, 5);
  Ctx ctx = cpu_ctx();
  const Tensor x = random_tensor({2, 1, 30, 3}, 8, -2.f, 2.f);
  Tensor x2 = x.clone();
  for (float& v : x2.span()) v = 3.f * v + 10.f;
  const Tensor y = m.run(ctx, x), y2 = m.run(ctx, x2);
  Tensor want = y.clone();
  for (float& v : want.span()) v = 3.f * v + 10.f;
  EXPECT_LE(rel_error(y2, want), 1e-5);
}

TEST(TimeSeries, ForecasterGradientsMatchFiniteDifferences) {
  // Gated time and feature mixing, BatchNorm in one variant, std scaling and the forecast head.
  for (const char* norm : {"layer_norm", "batch_norm"}) {
    nlohmann::json j = nlohmann::json::parse(kForecaster);
    j["norms"]["type"] = norm;
    MetaFormer m(parse_config(j.dump(), "t"));
    initialize_parameters(m, 6);
    for (auto& [name, p] : m.named_parameters())  // gates and biases away from their zero init
      if (!p->buffer) p->value.copy_from(random_tensor(p->value.shape(), std::hash<std::string>{}(name), -0.5f, 0.5f));
    const Tensor x = random_tensor({2, 1, 30, 3}, 9, -2.f, 2.f), target = random_tensor({2, 5, 3}, 10);
    Ctx ctx = cpu_ctx("ref");
    auto loss = [&](bool backward) {
      ctx.training = backward;
      Tensor dp;
      const double l = forecast_mse(m.run(ctx, x), target, dp);
      if (backward) m.backward(ctx, dp);
      return l;
    };
    if (std::string(norm) == "batch_norm") {
      // Training-mode BatchNorm normalises with the batch's statistics: compare like with like.
      auto train_loss = [&](bool backward) {
        ctx.training = true;
        Tensor dp;
        const double l = forecast_mse(m.run(ctx, x), target, dp);
        if (backward) m.backward(ctx, dp);
        return l;
      };
      const DirectionalDerivative d = directional_derivative(m, train_loss, 2.5e-4f);
      EXPECT_NEAR(d.numeric, d.analytic, 2e-2 * std::fabs(d.analytic)) << norm;
    } else {
      const DirectionalDerivative d = directional_derivative(m, loss, 2.5e-4f);
      EXPECT_NEAR(d.numeric, d.analytic, 2e-2 * std::fabs(d.analytic)) << norm;
    }
  }
}

// A noisy sum of two sines per channel, [T, C].
Tensor synthetic_series(int64_t T, int64_t C) {
  Tensor s = Tensor::empty({T, C});
  const Tensor noise = random_tensor({T, C}, 21, -0.05f, 0.05f);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c)
      s.data()[t * C + c] = static_cast<float>(std::sin(2 * M_PI * t / (8.0 + 3 * c)) +
                                               0.5 * std::sin(2 * M_PI * t / 5.0 + c) + 0.3 * c) +
                            noise.data()[t * C + c];
  return s;
}

TEST(TimeSeries, ForecastTrainingLowersTheMse) {
  for (const char* mixer : {"time_mlp", "gated_time_mlp", "pooling", "attention"}) {
    nlohmann::json j = nlohmann::json::parse(kForecaster);
    j["mixers"] = std::string(mixer) == "attention" ? nlohmann::json{{"type", "attention"}, {"head_dim", 4}}
                                                   : nlohmann::json{{"type", mixer}};
    MetaFormer m(parse_config(j.dump(), mixer));
    initialize_parameters(m, 7);
    const ForecastWindows w = forecast_windows(synthetic_series(120, 3), 30, 5, 3);
    ASSERT_EQ(w.context.shape(), (Shape{29, 1, 30, 3}));
    AdamW opt(m, {.lr = 3e-3, .weight_decay = 0.0});
    Ctx ctx = cpu_ctx();
    Tensor dp;
    ctx.training = false;
    const double before = forecast_mse(m.run(ctx, w.context), w.future, dp);
    for (int step = 0; step < 60; ++step) forecast_train_step(m, opt, ctx, w.context, w.future, 3e-3);
    ctx.training = false;
    const double after = forecast_mse(m.run(ctx, w.context), w.future, dp);
    EXPECT_LT(after, 0.5 * before) << mixer << ": " << before << " -> " << after;
    EXPECT_LT(forecast_mae(m.run(ctx, w.context), w.future), 1.0) << mixer;
  }
}

TEST(TimeSeries, BadSeriesGetOneClearError) {
  MetaFormer m(parse_config(kForecaster, "t"));
  initialize_parameters(m, 8);
  Ctx ctx = cpu_ctx();
  const auto message = [&](const Tensor& x) {
    try {
      m.run(ctx, x);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Tensor nan = random_tensor({2, 1, 30, 3}, 9);
  nan.data()[(1 * 30 + 4) * 3 + 2] = NAN;
  EXPECT_EQ(message(nan), "the series has a NaN at step 4, channel 2 of sample 1");
  EXPECT_EQ(message(random_tensor({1, 1, 7, 3}, 1)), "a series of 7 steps is shorter than one patch (8 steps)");
  EXPECT_NE(message(random_tensor({1, 1, 38, 3}, 1)).find("built for rows of 6 tokens"), std::string::npos);
  // The windows of a series too short for one context and future.
  EXPECT_THROW(forecast_windows(Tensor::zeros({20, 3}), 30, 5), Error);
  Tensor dp;
  EXPECT_THROW(forecast_mse(Tensor::zeros({2, 5, 3}), Tensor::zeros({2, 5, 2}), dp), Error);
}

// The classification training loop refuses a forecaster with one line instead of misusing its output.
TEST(TimeSeries, TrainingLoopRefusesAForecasterOnClassificationData) {
  TempDir dir;
  const DataSplits data = open_long_range(64, 16);
  try {
    train(parse_config(kForecaster, "t"), TrainOptions{}, data, dir.path(), false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not a forecasting task"), std::string::npos) << e.what();
  }
}

TEST(TimeSeries, ChannelMeanHeadClassifiesEachSample) {
  nlohmann::json j = nlohmann::json::parse(kForecaster);
  j["head"] = {{"type", "channel_mean_linear"}};
  j["num_classes"] = 4;
  j["sequence"]["scaling"] = "none";
  MetaFormer m(parse_config(j.dump(), "t"));
  initialize_parameters(m, 9);
  Ctx ctx = cpu_ctx();
  EXPECT_EQ(m.run(ctx, random_tensor({2, 1, 30, 3}, 1)).shape(), (Shape{2, 4}));
  std::map<std::string, Shape> shapes;
  for (auto& [name, p] : m.named_parameters()) shapes[name] = p->value.shape();
  EXPECT_EQ(shapes["head.weight"], (Shape{4, 3 * 8}));
  EXPECT_EQ(shapes["stem.proj.weight"], (Shape{8, 8}));
  EXPECT_EQ(shapes["blocks.0.token_mixer.fc1.weight"], (Shape{12, 6}));
  EXPECT_EQ(shapes["blocks.0.token_mixer.gate.weight"], (Shape{6, 6}));
  EXPECT_EQ(shapes["blocks.1.mlp.gate.weight"], (Shape{8, 8}));
}

// ---- parity with transformers' PatchTSMixer ----------------------------------------------------

struct Golden {
  nlohmann::json info;
  SafeTensors model, io;
};

bool have_golden() { return std::filesystem::exists(data_path("patchtsmixer/patchtsmixer_config.json")); }

Golden open_golden(const std::string& task) {
  const std::string dir = data_path("patchtsmixer");
  std::ifstream f(dir + "/patchtsmixer_config.json");
  return {nlohmann::json::parse(f)[task], SafeTensors::open(dir + "/patchtsmixer_" + task + ".safetensors"),
          SafeTensors::open(dir + "/patchtsmixer_" + task + "_io.safetensors")};
}

// [B, L, C] -> the engine's series batch [B, 1, L, C]
Tensor as_series(const Tensor& t) { return t.reshape({t.dim(0), 1, t.dim(1), t.dim(2)}); }

// Runs the golden model and compares the patches, every layer, and the output.
void expect_golden_outputs(const std::string& task) {
  const Golden g = open_golden(task);
  const bool classification = task == "classification";
  MetaFormer model(patchtsmixer_config(g.info["config"], classification));
  EXPECT_EQ(load_patchtsmixer(model, g.model), static_cast<int>(g.model.names().size()));
  EXPECT_EQ(model.num_parameters(), g.info["num_parameters"].get<int64_t>());  // transformers' count
  for (const char* backend : {"ref", "cpu"}) {
    Ctx ctx = cpu_ctx(backend);
    std::map<std::string, Tensor> seen;
    ctx.on_output = [&](const std::string& path, const Tensor& t) { seen[path] = t.clone(); };
    const Tensor y = model.run(ctx, as_series(g.io.load("past_values")));
    // The engine's [B·C, 1, N, D] tokens are transformers' [B, C, N, D] in memory.
    const auto same = [](const Tensor& t, const Tensor& want) { return rel_error(t.reshape(want.shape()), want); };
    EXPECT_LE(same(seen["stem"], g.io.load("patches")), 1e-5) << task << " " << backend;
    for (int i = 0; i < g.info["config"]["num_layers"].get<int>(); ++i) {
      const std::string p = "layers." + std::to_string(i);
      EXPECT_LE(same(seen["blocks." + std::to_string(i)], g.io.load(p + ".out")), 1e-4) << task << " " << backend << p;
    }
    EXPECT_LE(rel_error(y, g.io.load("prediction_outputs")), 1e-4) << task << " " << backend;
  }
}

TEST(PatchTsMixerGolden, ForecasterMatchesTransformersPatchTSMixerForPrediction) {
  if (!have_golden()) FAIL() << "golden files not present (tools/golden/make_patchtsmixer_golden.py)";
  expect_golden_outputs("prediction");
}

TEST(PatchTsMixerGolden, ClassifierMatchesTransformersPatchTSMixerForTimeSeriesClassification) {
  if (!have_golden()) FAIL() << "golden files not present (tools/golden/make_patchtsmixer_golden.py)";
  expect_golden_outputs("classification");
}

TEST(PatchTsMixerGolden, ForecasterGradientsMatchTransformersAutograd) {
  if (!have_golden()) FAIL() << "golden files not present (tools/golden/make_patchtsmixer_golden.py)";
  const Golden g = open_golden("prediction");
  MetaFormer model(patchtsmixer_config(g.info["config"], false));
  load_patchtsmixer(model, g.model);
  std::map<std::string, std::string> hf_name;  // engine -> transformers
  for (const std::string& k : g.model.names()) hf_name[patchtsmixer_key(k)] = k;
  for (const char* backend : {"ref", "cpu"}) {
    for (auto& [name, p] : model.named_parameters())
      if (!p->buffer) p->grad = Tensor::zeros(p->value.shape());
    Ctx ctx = cpu_ctx(backend);
    ctx.training = true;  // LayerNorm and no dropout: the same function as in evaluation
    const Tensor y = model.run(ctx, as_series(g.io.load("past_values")));
    EXPECT_LE(rel_error(y, g.io.load("prediction_outputs")), 1e-4) << backend;
    model.backward(ctx, g.io.load("grad.cotangent"));
    int checked = 0;
    for (auto& [name, p] : model.named_parameters()) {
      if (p->buffer) continue;
      const std::string key = "grad." + hf_name[name];
      ASSERT_TRUE(g.io.contains(key)) << name;
      const Tensor want = g.io.load(key);
      EXPECT_LE(rel_error(p->grad.reshape(want.shape()), want), 1e-4) << backend << " " << name;
      ++checked;
    }
    EXPECT_EQ(checked, static_cast<int>(g.model.names().size()));
  }
}

TEST(PatchTsMixer, RenamingTableCoversTheModelTree) {
  EXPECT_EQ(patchtsmixer_key("model.encoder.patcher.weight"), "stem.proj.weight");
  EXPECT_EQ(patchtsmixer_key("model.encoder.mlp_mixer_encoder.mixers.1.patch_mixer.norm.norm.weight"),
            "blocks.1.norm1.weight");
  EXPECT_EQ(patchtsmixer_key("model.encoder.mlp_mixer_encoder.mixers.0.feature_mixer.norm.norm.batchnorm.running_var"),
            "blocks.0.norm2.running_var");
  EXPECT_EQ(patchtsmixer_key("model.encoder.mlp_mixer_encoder.mixers.0.patch_mixer.mlp.fc2.bias"),
            "blocks.0.token_mixer.fc2.bias");
  EXPECT_EQ(patchtsmixer_key("model.encoder.mlp_mixer_encoder.mixers.0.patch_mixer.gating_block.attn_layer.weight"),
            "blocks.0.token_mixer.gate.weight");
  EXPECT_EQ(patchtsmixer_key("model.encoder.mlp_mixer_encoder.mixers.2.feature_mixer.gating_block.attn_layer.bias"),
            "blocks.2.mlp.gate.bias");
  EXPECT_EQ(patchtsmixer_key("head.base_forecast_block.weight"), "head.weight");
  EXPECT_EQ(patchtsmixer_key("head.projection.bias"), "head.bias");
  EXPECT_EQ(patchtsmixer_key("model.encoder.positional_encoder.position_enc"), "");
  // Unsupported options are refused with one line.
  EXPECT_THROW(patchtsmixer_config({{"mode", "mix_channel"}}, false), Error);
  EXPECT_THROW(patchtsmixer_config({{"self_attn", true}}, false), Error);
  EXPECT_THROW(patchtsmixer_config({{"head_aggregation", "max_pool"}}, true), Error);
}

TEST(TimeSeriesCli, RunWritesTheForecastOfASeriesBatch) {
  TempDir dir;
  {
    std::ofstream(dir.file("f.json")) << kForecaster;
  }
  write_npy(dir.file("x.npy"), random_tensor({2, 3, 1, 30}, 3));
  CliResult r = run_cli({"run", "--config", dir.file("f.json"), "--input", dir.file("x.npy"), "--output",
                         dir.file("y.npy"), "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_npy(dir.file("y.npy")).shape(), (Shape{2, 5, 3}));
  EXPECT_NE(r.out.find("forecast [2, 5, 3]"), std::string::npos) << r.out;
  Tensor nan = random_tensor({1, 3, 1, 30}, 4);
  nan.data()[1 * 30 + 6] = NAN;  // channel 1, step 6
  write_npy(dir.file("nan.npy"), nan);
  r = run_cli({"run", "--config", dir.file("f.json"), "--input", dir.file("nan.npy"), "--output", dir.file("z.npy")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("the series has a NaN at step 6, channel 1 of sample 0"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mf::test
