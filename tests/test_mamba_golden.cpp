// The S6 mixer against Hugging Face transformers' MambaMixer (tools/golden/make_mamba_golden.py: a
// small MambaModel with random weights, float64, its pure-PyTorch path on the CPU). The mixer loads
// the model's state dict under transformers' own key names and must reproduce, for each layer, what
// that layer's MambaMixer returned for the input it received, and the gradients of <output, g>
// with respect to that input and to every mixer parameter, to 1e-4 relative (the bar).
// The whole MambaModel backbone (embedding, RMSNorm + mixer blocks, norm_f) is the engine's
// isotropic token model with the "mamba" block and RMSNorm, loaded under a renaming of the keys.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "mixers/mixer.h"
#include "model/metaformer.h"
#include "test_util.h"

namespace mf::test {
namespace {

struct Golden {
  nlohmann::json config;
  SafeTensors model, io;
};

Golden open_golden() {
  const std::string dir = data_path("mamba");
  std::ifstream f(dir + "/mamba_config.json");
  return {nlohmann::json::parse(f)["config"], SafeTensors::open(dir + "/mamba_model.safetensors"),
          SafeTensors::open(dir + "/mamba_io.safetensors")};
}

// An s6 mixer with the golden model's sizes, its parameters loaded from layers.{layer}.mixer.*.
std::unique_ptr<TokenMixer> load_mixer(const Golden& g, int layer) {
  const auto& c = g.config;
  const nlohmann::json options{{"d_state", c["state_size"]},     {"d_inner", c["intermediate_size"]},
                               {"d_conv", c["conv_kernel"]},     {"dt_rank", c["time_step_rank"]},
                               {"bias", c["use_bias"]},          {"conv_bias", c["use_conv_bias"]}};
  auto m = MixerRegistry::get().create("s6", MixerContext{c["hidden_size"].get<int64_t>(), 0, 1, 1, options});
  m->assign_paths("mixer");
  int loaded = 0;
  for (auto& [name, p] : m->named_parameters()) {
    const std::string key = "layers." + std::to_string(layer) + ".mixer." + name;
    EXPECT_TRUE(g.model.contains(key)) << key;
    const Tensor t = g.model.load(key);
    EXPECT_EQ(t.shape(), p->value.shape()) << key;
    p->value.copy_from(t);
    p->grad = Tensor::zeros(p->value.shape());
    ++loaded;
  }
  // Every key of the layer's mixer in the state dict is one of ours, and the reverse.
  int keys = 0;
  for (const std::string& k : g.model.names()) keys += k.rfind("layers." + std::to_string(layer) + ".mixer.", 0) == 0;
  EXPECT_EQ(loaded, keys);
  return m;
}

// [B, L, D] -> the [B, 1, L, D] token grid of a sequence.
Tensor as_grid(const Tensor& t) { return t.reshape({t.dim(0), 1, t.dim(1), t.dim(2)}); }

TEST(MambaGolden, MixerMatchesTransformersMambaMixer) {
  if (!std::filesystem::exists(data_path("mamba/mamba_io.safetensors"))) FAIL() << "golden files not present";
  const Golden g = open_golden();
  for (int layer = 0; layer < g.config["num_hidden_layers"].get<int>(); ++layer)
    for (const char* backend : {"ref", "cpu"}) {
      auto m = load_mixer(g, layer);
      Ctx ctx;
      ctx.exec.backend = &get_backend(backend);
      const std::string p = "layers." + std::to_string(layer) + ".";
      const Tensor y = m->run(ctx, as_grid(g.io.load(p + "mixer_in")));
      const Tensor want = as_grid(g.io.load(p + "mixer_out"));
      EXPECT_LE(rel_error(y, want), 1e-4) << backend << " layer " << layer;
      EXPECT_LE(max_abs_diff(y, want), 1e-4 * max_abs_diff(want, Tensor::zeros(want.shape()))) << backend;
    }
}

TEST(MambaGolden, MixerGradientsMatchTransformersAutograd) {
  if (!std::filesystem::exists(data_path("mamba/mamba_io.safetensors"))) FAIL() << "golden files not present";
  const Golden g = open_golden();
  // chunk 64 (default) and 16: the golden sequence (70 tokens) crosses chunk edges either way.
  for (int64_t chunk : {64, 16})
    for (const char* backend : {"ref", "cpu"}) {
      auto m = load_mixer(g, 0);
      if (chunk != 64) {
        nlohmann::json options{{"d_state", g.config["state_size"]}, {"d_inner", g.config["intermediate_size"]},
                               {"d_conv", g.config["conv_kernel"]}, {"dt_rank", g.config["time_step_rank"]},
                               {"chunk", chunk}};
        auto c = MixerRegistry::get().create("s6", MixerContext{g.config["hidden_size"].get<int64_t>(), 0, 1, 1, options});
        c->assign_paths("mixer");
        auto src = m->named_parameters();
        auto dst = c->named_parameters();
        for (size_t i = 0; i < dst.size(); ++i) {
          dst[i].second->value.copy_from(src[i].second->value);
          dst[i].second->grad = Tensor::zeros(dst[i].second->value.shape());
        }
        m = std::move(c);
      }
      Ctx ctx;
      ctx.exec.backend = &get_backend(backend);
      ctx.training = true;
      m->run(ctx, as_grid(g.io.load("layers.0.mixer_in")));
      const Tensor dx = m->backward(ctx, as_grid(g.io.load("grad.cotangent")));
      const std::string label = std::string(backend) + " chunk " + std::to_string(chunk);
      EXPECT_LE(rel_error(dx, as_grid(g.io.load("grad.input"))), 1e-4) << label;
      for (auto& [name, p] : m->named_parameters())
        EXPECT_LE(rel_error(p->grad, g.io.load("grad." + name)), 1e-4) << label << " " << name;
    }
}

// MambaModel as a 1-D MetaFormer: embeddings -> stem.embed, layers.{i} -> blocks.{i} ("mamba" block:
// norm, mixer, one residual branch), norm_f -> norm (the isotropic model's norm over every token).
TEST(MambaGolden, WholeBackboneMatchesTransformersMambaModel) {
  if (!std::filesystem::exists(data_path("mamba/mamba_io.safetensors"))) FAIL() << "golden files not present";
  const Golden g = open_golden();
  const auto& c = g.config;
  nlohmann::json j{{"name", "mamba_golden"}, {"in_chans", 1}, {"num_classes", 2},
                   {"depths", {c["num_hidden_layers"]}}, {"dims", {c["hidden_size"]}},
                   {"mixers", {{"type", "s6"}, {"d_state", c["state_size"]}, {"d_inner", c["intermediate_size"]},
                               {"d_conv", c["conv_kernel"]}, {"dt_rank", c["time_step_rank"]}}},
                   {"block", "mamba"}, {"layout", "isotropic"},
                   {"norms", {{"type", "rms_norm"}, {"eps", c["layer_norm_epsilon"]}}},
                   {"head", {{"type", "token_norm_linear"}, {"norm", {{"type", "rms_norm"}, {"eps", c["layer_norm_epsilon"]}}}}},
                   {"sequence", {{"input", "tokens"}, {"vocab_size", c["vocab_size"]}, {"length", 70}}}};
  MetaFormer model(parse_config(j.dump(), "mamba golden"));
  int loaded = 0;
  for (auto& [name, p] : model.named_parameters()) {
    std::string key = name;
    if (key == "stem.embed.weight") key = "embeddings.weight";
    else if (key == "norm.weight") key = "norm_f.weight";
    else if (key.rfind("blocks.", 0) == 0) key = "layers." + key.substr(7);
    else continue;  // the classifier (MambaModel has none)
    ASSERT_TRUE(g.model.contains(key)) << name;
    p->value.copy_from(g.model.load(key));
    ++loaded;
  }
  EXPECT_EQ(loaded, static_cast<int>(g.model.names().size()));  // every key of the state dict is used
  for (const char* backend : {"ref", "cpu"}) {
    Ctx ctx;
    ctx.exec.backend = &get_backend(backend);
    std::map<std::string, Tensor> seen;
    ctx.on_output = [&](const std::string& path, const Tensor& t) { seen[path] = t.clone(); };
    const Tensor ids = g.io.load("input_ids");
    model.run(ctx, ids.reshape({ids.dim(0), 1, ids.dim(1), 1}));
    EXPECT_LE(rel_error(seen["stem"], as_grid(g.io.load("embeddings"))), 1e-6) << backend;
    for (int i = 0; i < c["num_hidden_layers"].get<int>(); ++i)
      EXPECT_LE(rel_error(seen["blocks." + std::to_string(i)], as_grid(g.io.load("layers." + std::to_string(i) + ".out"))),
                1e-4) << backend << " layer " << i;
    EXPECT_LE(rel_error(seen["norm"], as_grid(g.io.load("last_hidden_state"))), 1e-4) << backend;
  }
}

}  // namespace
}  // namespace mf::test
