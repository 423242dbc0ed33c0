// Every registered token mixer on its own: the gradient of every parameter and of the input against
// finite differences (ref backend), the CPU backend against the reference backend, and the linear
// mixers against their explicitly built N×N token matrices.
#include <gtest/gtest.h>

#include <cmath>

#include "mixers/mixer.h"
#include "test_util.h"

namespace mf::test {
namespace {

struct MixerCase {
  std::string name;
  nlohmann::json options = nlohmann::json::object();
  int64_t dim = 16, height = 7, width = 7;
};

std::unique_ptr<TokenMixer> make(const MixerCase& c) {
  MixerContext ctx{c.dim, 0, c.height, c.width, c.options.is_null() ? nlohmann::json::object() : c.options};
  auto m = MixerRegistry::get().create(c.name, ctx);
  m->assign_paths("mixer");
  // Random values everywhere (not the training init, which leaves scales at 1 and biases at 0).
  uint64_t seed = 1;
  for (auto& [name, p] : m->named_parameters()) {
    const bool scalar_scale = p->value.numel() == 1;
    p->value.copy_from(random_tensor(p->value.shape(), seed++, scalar_scale ? 0.5f : -0.5f, scalar_scale ? 1.5f : 0.5f));
    p->grad = Tensor::zeros(p->value.shape());
  }
  return m;
}

class MixerGradient : public ::testing::TestWithParam<MixerCase> {};

// <y, g> along a random direction in (input, trainable parameters): central differences against
// backward(). Relative to |analytic|; a step of 1e-3 in float32 (docs/tolerances.md: 1e-2 class).
TEST_P(MixerGradient, MatchesFiniteDifferencesAndTheCpuBackend) {
  const MixerCase& c = GetParam();
  auto m = make(c);
  const Tensor x = random_tensor({2, c.height, c.width, c.dim}, 7);
  const Tensor g = random_tensor({2, c.height, c.width, c.dim}, 8);
  Ctx ctx;
  ctx.exec.backend = &get_backend("ref");
  auto loss = [&](const Tensor& in) {
    Tensor y = m->run(ctx, in);
    double l = 0;
    for (int64_t i = 0; i < y.numel(); ++i) l += static_cast<double>(y.data()[i]) * g.data()[i];
    return l;
  };
  ctx.training = true;
  loss(x);
  const Tensor dx = m->backward(ctx, g);
  ctx.training = false;

  const Tensor dir_x = random_tensor(x.shape(), 9);
  std::vector<std::pair<Parameter*, Tensor>> dirs;
  double analytic = 0;
  for (int64_t i = 0; i < x.numel(); ++i) analytic += static_cast<double>(dx.data()[i]) * dir_x.data()[i];
  uint64_t seed = 100;
  for (auto& [name, p] : m->named_parameters()) {
    if (!p->trainable) continue;
    Tensor d = random_tensor(p->value.shape(), seed++);
    for (int64_t i = 0; i < d.numel(); ++i) analytic += static_cast<double>(p->grad.data()[i]) * d.data()[i];
    dirs.emplace_back(p, d);
  }
  const float eps = 1e-3f;
  auto shifted = [&](float by) {
    Tensor xs = x.clone();
    for (int64_t i = 0; i < xs.numel(); ++i) xs.data()[i] += by * dir_x.data()[i];
    for (auto& [p, d] : dirs) {
      for (int64_t i = 0; i < d.numel(); ++i) p->value.data()[i] += by * d.data()[i];
      p->value.bump_version();
    }
    const double l = loss(xs);
    for (auto& [p, d] : dirs) {
      for (int64_t i = 0; i < d.numel(); ++i) p->value.data()[i] -= by * d.data()[i];
      p->value.bump_version();
    }
    return l;
  };
  const double numeric = (shifted(eps) - shifted(-eps)) / (2 * eps);
  EXPECT_NEAR(numeric, analytic, 1e-2 * std::fabs(analytic)) << c.name;

  // The fast backend's forward against the reference one.
  Ctx cpu;
  cpu.exec.backend = &get_backend("cpu");
  EXPECT_LE(rel_error(m->run(cpu, x), m->run(ctx, x)), 1e-5) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    Mixers, MixerGradient,
    ::testing::Values(MixerCase{"identity"}, MixerCase{"random"}, MixerCase{"pooling"},
                      MixerCase{"sepconv", {{"kernel_size", 5}}}, MixerCase{"attention", {{"head_dim", 8}}},
                      MixerCase{"gated_cnn", {}, 18, 5, 6}, MixerCase{"gated_cnn", {{"conv_ratio", 0.5}, {"act", "silu"}}},
                      MixerCase{"token_mlp", {}, 16, 5, 6}, MixerCase{"token_mlp", {{"ratio", 1.0}, {"glu", true}}},
                      MixerCase{"spatial_mlp", {}, 12, 5, 6}, MixerCase{"spatial_gating", {{"ratio", 2.0}}, 8, 5, 6},
                      MixerCase{"global_filter", {}, 6, 5, 6}, MixerCase{"global_filter", {}, 4, 7, 7},
                      // AFF's default ReLU puts kinks at many near-zero spectral pre-activations, where
                      // central differences are unreliable (4% off at ReLU + softshrink 0.01); the
                      // smooth GELU variants check the same code exactly, and the ReLU default is
                      // checked against PyTorch (test_spectral_mixers.cpp).
                      MixerCase{"aff", {{"num_blocks", 4}, {"act", "gelu"}, {"sparsity_threshold", 0.0}}, 8, 5, 6},
                      MixerCase{"aff", {{"num_blocks", 4}, {"act", "gelu"}}, 8, 5, 6},
                      MixerCase{"aff", {{"num_blocks", 2}, {"sparsity_threshold", 0.0}}, 4, 7, 7},
                      MixerCase{"axial_mlp", {}, 6, 5, 6}, MixerCase{"wavelet", {}, 5, 6, 8},
                      MixerCase{"wavelet", {}, 3, 7, 5}),
    [](const auto& info) { return info.param.name + "_" + std::to_string(info.index); });

// ResMLP's cross-patch layer is a learned N×N token matrix: y[b, n, c] = Σ_m W[n, m] x[b, m, c] + bias[n],
// tokens in row-major order (n = h·W + w) as timm flattens them.
TEST(LinearMixers, SpatialMlpIsItsTokenMatrix) {
  const MixerCase c{"spatial_mlp", {}, 5, 3, 4};
  auto m = make(c);
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
