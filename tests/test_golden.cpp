// Models against timm: small random-weight models of every family, built by timm's own classes and
// run in float64 by tools/golden/make_golden.py. Checks the output of the stem, of every stage and
// the logits, on both backends. Tolerances (docs/tolerances.md): float32 against a float64
// reference; 2e-5 relative (Frobenius) for every tensor.
#include <gtest/gtest.h>

#include <filesystem>

#include "io/safetensors.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "core/error.h"
#include "test_util.h"

namespace mf::test {
namespace {

constexpr double kGoldenTolerance = 2e-5;

// [B, C, H, W] -> [B, H, W, C] (timm's stage outputs are channels-first).
Tensor to_nhwc(const Tensor& x) {
  Exec ref{&get_backend("ref"), nullptr};
  return op::nchw_to_nhwc(ref, x);
}

struct GoldenCase {
  std::string family;
  std::string backend;
};

class Golden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(Golden, MatchesTimmAtEveryStage) {
  const auto& [family, backend] = GetParam();
  const std::string dir = data_path("golden/" + family);
  ASSERT_TRUE(std::filesystem::exists(dir + "/config.json")) << "missing golden files in " << dir;
  MetaFormer model(load_config(dir + "/config.json"));
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  SafeTensors io = SafeTensors::open(dir + "/io.safetensors");

  std::map<std::string, Tensor> seen;
  Ctx ctx;
  ctx.exec.backend = &get_backend(backend);
  ctx.on_output = [&](const std::string& name, const Tensor& t) { seen[name] = t.clone(); };
  Tensor logits = model.forward_nchw(ctx, io.load("input"));

  std::vector<std::string> names{"stem"};
  if (model.config().isotropic()) names.push_back("blocks");
  else
    for (size_t s = 0; s < model.config().num_stages(); ++s) names.push_back("stages." + std::to_string(s));
  for (const auto& name : names) {
    ASSERT_TRUE(seen.count(name)) << name;
    Tensor expected = to_nhwc(io.load(name));
    ASSERT_EQ(seen[name].shape(), expected.shape()) << name;
    EXPECT_LE(rel_error(seen[name], expected), kGoldenTolerance) << family << " " << name;
  }
  Tensor expected = io.load("logits");
  ASSERT_EQ(logits.shape(), expected.shape());
  const double err = rel_error(logits, expected);
  EXPECT_LE(err, kGoldenTolerance) << family << " logits";
  RecordProperty("logits_rel_error", std::to_string(err));
}

std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> v;
  for (const char* f : {"poolformer", "poolformerv2", "convformer", "caformer", "identityformer", "randformer",
                        "mambaout", "mambaout_rw", "mixer", "gmixer", "resmlp", "gmlp"})
    for (const char* b : {"cpu", "ref"}) v.push_back({f, b});
  return v;
}

// bf16 precision (docs/bf16.md): every matrix product rounds its operands to 8 significant bits, and
// the rounding compounds through the network; on these models the logits move by 3e-3 to 2e-2
// (relative). The bar, 5e-2, catches a broken bf16 path (a wrong layout or a missed conversion
// gives errors of order 1) without claiming more than bf16 can give.
constexpr double kBf16GoldenTolerance = 5e-2;

class GoldenBf16 : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenBf16, StaysCloseToTimm) {
  const std::string dir = data_path("golden/" + GetParam());
  MetaFormer model(load_config(dir + "/config.json"));
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  SafeTensors io = SafeTensors::open(dir + "/io.safetensors");
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu", Precision::bf16);
  const double err = rel_error(model.forward_nchw(ctx, io.load("input")), io.load("logits"));
  EXPECT_LE(err, kBf16GoldenTolerance) << GetParam();
  EXPECT_GT(err, 0.0) << "bf16 gave fp32's exact logits: is the bf16 path running?";
}

INSTANTIATE_TEST_SUITE_P(Families, GoldenBf16,
                         ::testing::Values("poolformer", "poolformerv2", "convformer", "caformer", "identityformer",
                                           "randformer", "mambaout", "mambaout_rw", "mixer", "gmixer", "resmlp",
                                           "gmlp"));

INSTANTIATE_TEST_SUITE_P(Families, Golden, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param.family + "_" + info.param.backend; });

}  // namespace
}  // namespace mf::test
