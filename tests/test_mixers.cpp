// Every registered token mixer on its own (the cases come from the registry: tests/mixer_cases.h):
// the gradient of every parameter and of the input against finite differences (ref backend), the
// CPU backend against the reference backend, and the linear mixers against their explicitly built
// N×N token matrices.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "mixer_cases.h"
#include "mixers/mixer.h"
#include "test_util.h"

namespace mf::test {
namespace {

class MixerGradient : public ::testing::TestWithParam<MixerCase> {};

// <y, g> along a random direction in (input, trainable parameters): central differences against
// backward(). Relative to |analytic|; a step of 1e-3 in float32 (docs/tolerances.md: 1e-2 class).
// A mixer without a backward pass fails here (backward() throws).
TEST_P(MixerGradient, MatchesFiniteDifferencesAndTheCpuBackend) {
  const MixerCase& c = GetParam();
  const MixerGradientCheck r = check_mixer_gradient(c);
  EXPECT_NEAR(r.numeric, r.analytic, 1e-2 * std::fabs(r.analytic)) << c.label();
  EXPECT_LE(r.cpu_vs_ref, 1e-5) << c.label();
}

// The cases come from the registry: every registered mixer is here without a test edit.
INSTANTIATE_TEST_SUITE_P(Mixers, MixerGradient, ::testing::ValuesIn(mixer_cases()),
                         [](const auto& info) { return info.param.name + "_" + std::to_string(info.index); });

TEST(MixerCases, CoverEveryRegisteredMixer) {
  const auto cases = mixer_cases();
  for (const MixerInfo* info : MixerRegistry::get().all()) {
    const bool covered = std::any_of(cases.begin(), cases.end(), [&](const MixerCase& c) { return c.name == info->name; });
    EXPECT_TRUE(covered) << info->name;
  }
}

// ResMLP's cross-patch layer is a learned N×N token matrix: y[b, n, c] = Σ_m W[n, m] x[b, m, c] + bias[n],
// tokens in row-major order (n = h·W + w) as timm flattens them.
TEST(LinearMixers, SpatialMlpIsItsTokenMatrix) {
  const MixerCase c{"spatial_mlp", {}, 5, 3, 4};
  auto m = make_mixer(c);
  const Tensor& w = m->named_parameters()[0].second->value;  // weight [N, N]
  const Tensor& bias = m->named_parameters()[1].second->value;
  const int64_t N = c.height * c.width;
  ASSERT_EQ(w.shape(), (Shape{N, N}));
  const Tensor x = random_tensor({2, c.height, c.width, c.dim}, 3);
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  const Tensor y = m->run(ctx, x);
  Tensor ref = Tensor::zeros(x.shape());
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t ch = 0; ch < c.dim; ++ch) {
        double acc = bias.data()[n];
        for (int64_t k = 0; k < N; ++k) acc += static_cast<double>(w.data()[n * N + k]) * x.data()[(b * N + k) * c.dim + ch];
        ref.data()[(b * N + n) * c.dim + ch] = static_cast<float>(acc);
      }
  EXPECT_LE(rel_error(y, ref), 1e-6);
}

}  // namespace
}  // namespace mf::test
