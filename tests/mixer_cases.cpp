#include "mixer_cases.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "mixers/mixer.h"
#include "test_util.h"

namespace mf::test {

namespace {

// Mixers whose defaults do not suit a 16-channel 7×7 grid, or whose variants deserve their own
// check. A registered mixer without an entry here gets MixerCase{name}: nothing to add for a new
// mixer unless its defaults need a different grid.
const std::multimap<std::string, MixerCase>& tailored_cases() {
  static const std::multimap<std::string, MixerCase> cases = [] {
    std::multimap<std::string, MixerCase> m;
    auto add = [&](MixerCase c) { m.emplace(c.name, std::move(c)); };
    add({"sepconv", {{"kernel_size", 5}}});
    add({"sepconv", {}});  // ConvFormer's own 7x7 (the tiled kernels)
    add({"attention", {{"head_dim", 8}}});  // the default head_dim 32 exceeds 16 channels
    add({"gated_cnn", {}, 18, 5, 6});
    add({"gated_cnn", {{"conv_ratio", 0.5}, {"act", "silu"}}});
    add({"token_mlp", {}, 16, 5, 6});
    add({"token_mlp", {{"ratio", 1.0}, {"glu", true}}});
    add({"spatial_mlp", {}, 12, 5, 6});
    add({"spatial_gating", {{"ratio", 2.0}}, 8, 5, 6});
    add({"global_filter", {}, 6, 5, 6});
    add({"global_filter", {}, 4, 7, 7});
    // AFF's default ReLU puts kinks at many near-zero spectral pre-activations, where central
    // differences are unreliable (4% off at ReLU + softshrink 0.01); the smooth GELU variants check
    // the same code exactly, and the ReLU default is checked against PyTorch
    // (test_spectral_mixers.cpp).
    add({"aff", {{"num_blocks", 4}, {"act", "gelu"}, {"sparsity_threshold", 0.0}}, 8, 5, 6});
    add({"aff", {{"num_blocks", 4}, {"act", "gelu"}}, 8, 5, 6});
    add({"aff", {{"num_blocks", 2}, {"sparsity_threshold", 0.0}}, 4, 7, 7});
    add({"aff_bn", {{"num_blocks", 4}, {"act", "gelu"}}, 8, 5, 6});
    add({"axial_mlp", {}, 6, 5, 6});
    add({"wavelet", {}, 5, 6, 8});
    add({"wavelet", {}, 3, 7, 5});
    // WaveMix's block needs widths of 4k and grids that halve `level` times; iFormer's mixer needs an
    // even high-frequency part (heads and attention_heads chosen for it) and, with pooling, even grids.
    add({"wavemix", {{"level", 1}}, 16, 6, 8});
    add({"wavemix", {{"level", 2}, {"ff_channel", 6}, {"mult", 1}}, 8, 8, 4});
    // Few max-pooled channels and small grids: the fewer windows, the less likely the finite differences
    // step across a near-tie of a window's maximum (where max pooling has no derivative).
    add({"inception", {{"heads", 4}, {"attention_heads", 3}}, 16, 4, 6});
    add({"inception", {{"heads", 4}, {"attention_heads", 3}, {"pool_size", 1}}, 16, 3, 5});
    // Sequences (docs/sequences.md): a 1 × L token grid. Mixers listed here lose their default 7 × 7
    // case unless it is added back.
    add({"pooling"});
    add({"pooling", {}, 16, 1, 9});
    add({"random"});
    add({"random", {}, 16, 1, 9});
    add({"attention", {{"head_dim", 8}, {"causal", true}}, 16, 1, 9});
    add({"attention", {{"head_dim", 8}, {"causal", true}}, 16, 3, 4});
    add({"token_mlp", {}, 16, 1, 9});
    add({"global_filter", {}, 6, 1, 10});
    // S6: scan chunks shorter than the sequence (the cpu backward's recomputation crosses them), a
    // 2-D grid (its tokens in row-major order), and the defaults but for a small state.
    add({"s6", {{"d_state", 4}, {"dt_rank", 2}, {"chunk", 4}}, 8, 1, 11});
    add({"s6", {{"d_state", 3}, {"expand", 1}, {"d_conv", 3}, {"bias", true}}, 6, 3, 4});
    add({"s6", {{"d_state", 4}}, 16, 1, 9});
    // Hydra: chunks shorter than the sequence, several diagonal heads, a 2-D grid; PoNet: segments
    // that split the sequence unevenly, a wider local window, several heads.
    add({"hydra", {{"d_state", 4}, {"dt_rank", 2}, {"chunk", 4}, {"headdim", 4}}, 8, 1, 11});
    add({"hydra", {{"d_state", 3}, {"expand", 1}, {"d_conv", 3}, {"bias", true}}, 6, 3, 4});
    add({"hydra", {{"d_state", 4}}, 16, 1, 9});
    add({"ponet", {{"head_dim", 4}, {"segments", 3}}, 8, 1, 11});
    add({"ponet", {{"local_kernel", 5}}, 16, 1, 9});
    add({"ponet", {{"head_dim", 2}, {"segments", 2}}, 6, 3, 4});
    // Time mixing: the defaults on 7 × 7 (rows mixed separately), 1 × L sequences, TSMixer's one
    // layer, and the softmax gate over the tokens.
    add({"time_mlp"});
    add({"time_mlp", {}, 6, 1, 10});
    add({"time_mlp", {{"layers", 1}}, 5, 2, 6});
    add({"gated_time_mlp"});
    add({"gated_time_mlp", {{"ratio", 1.5}}, 6, 1, 10});
    return m;
  }();
  return cases;
}

}  // namespace

std::string MixerCase::label() const {
  return fmt::format("{} {} [2, {}, {}, {}]", name, options.is_null() ? std::string("{}") : options.dump(), height, width, dim);
}

std::vector<MixerCase> mixer_cases() {
  std::vector<MixerCase> out;
  for (const MixerInfo* info : MixerRegistry::get().all()) {
    auto [begin, end] = tailored_cases().equal_range(info->name);
    if (begin == end) out.push_back(MixerCase{info->name});
    for (auto it = begin; it != end; ++it) out.push_back(it->second);
  }
  return out;
}

bool MixerGradientCheck::gradient_ok() const { return std::fabs(numeric - analytic) <= 1e-2 * std::fabs(analytic); }

std::unique_ptr<TokenMixer> make_mixer(const MixerCase& c) {
  MixerContext mctx{c.dim, 0, c.height, c.width, c.options.is_null() ? nlohmann::json::object() : c.options};
  auto m = MixerRegistry::get().create(c.name, mctx);
  m->assign_paths("mixer");
  // Random values everywhere (not the training init, which leaves scales at 1 and biases at 0).
  uint64_t seed = 1;
  for (auto& [name, p] : m->named_parameters()) {
    // Scalars (scales) and buffers (BatchNorm's running statistics: a variance) positive.
    const bool scalar_scale = p->value.numel() == 1 || p->buffer;
    p->value.copy_from(random_tensor(p->value.shape(), seed++, scalar_scale ? 0.5f : -0.5f, scalar_scale ? 1.5f : 0.5f));
    p->grad = Tensor::zeros(p->value.shape());
  }
  return m;
}

MixerGradientCheck check_mixer_gradient(const MixerCase& c) {
  auto m = make_mixer(c);
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
  // The differences are taken of the training-mode forward too: the function backward
  // differentiates (BatchNorm's training mode normalises with the batch's statistics, eval with
  // the running ones).
  ctx.training = true;
  loss(x);
  const Tensor dx = m->backward(ctx, g);

  MixerGradientCheck r;
  const Tensor dir_x = random_tensor(x.shape(), 9);
  std::vector<std::pair<Parameter*, Tensor>> dirs;
  for (int64_t i = 0; i < x.numel(); ++i) r.analytic += static_cast<double>(dx.data()[i]) * dir_x.data()[i];
  uint64_t seed = 100;
  for (auto& [name, p] : m->named_parameters()) {
    if (!p->trainable) continue;
    Tensor d = random_tensor(p->value.shape(), seed++);
    for (int64_t i = 0; i < d.numel(); ++i) r.analytic += static_cast<double>(p->grad.data()[i]) * d.data()[i];
    dirs.emplace_back(p, d);
  }
  const float eps = 1e-3f;  // float32 central differences: the 1e-2 class of docs/tolerances.md
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
  r.numeric = (shifted(eps) - shifted(-eps)) / (2 * eps);
  ctx.training = false;

  // The fast backend's forward against the reference one.
  Ctx cpu;
  cpu.exec.backend = &get_backend("cpu");
  r.cpu_vs_ref = rel_error(m->run(cpu, x), m->run(ctx, x));
  return r;
}

std::optional<MixerDeviceErrors> mixer_gradient_error_on(const MixerCase& c, Backend& backend, std::string& unsupported,
                                                         bool judge_scalars) {
  auto ref_mixer = make_mixer(c), mixer = make_mixer(c);
  std::set<OpKind> ops;
  mixer->all_ops(ops);
  for (OpKind op : ops)
    if (!backend.supports(op) || !backend.supports_backward(op)) {
      unsupported = op_name(op);
      return std::nullopt;
    }
  auto ref_params = ref_mixer->named_parameters(), params = mixer->named_parameters();
  for (size_t i = 0; i < params.size(); ++i) params[i].second->value.copy_from(ref_params[i].second->value);
  move_parameters(*mixer, backend.device());
  const Tensor x = random_tensor({2, c.height, c.width, c.dim}, 7);
  const Tensor g = random_tensor({2, c.height, c.width, c.dim}, 8);
  Ctx ref;
  ref.exec.backend = &get_backend("ref");
  ref.training = true;
  ref_mixer->run(ref, x);
  const Tensor dx_ref = ref_mixer->backward(ref, g);
  Ctx under;
  under.exec.backend = &backend;
  under.training = true;
  mixer->run(under, x.to(backend.device()));
  const Tensor dx = mixer->backward(under, g.to(backend.device()));
  backend.synchronize();
  MixerDeviceErrors r;
  r.worst = rel_error(dx.to(Device::CPU), dx_ref);
  r.worst_name = "the input";
  // A bias right before a norm that subtracts its mean (a convolution's bias before BatchNorm in
  // training) has a gradient of exactly zero, which both backends give as rounding noise: a relative
  // error of noise against noise. Such a gradient (reference norm under 1e-6 of all the parameters'
  // gradients) is judged by its distance to the reference relative to the whole gradient, as
  // tests/test_train_golden.cpp does.
  double total_sq = 0;
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].second->trainable)
      for (float v : ref_params[i].second->grad.span()) total_sq += static_cast<double>(v) * v;
  const double total = std::sqrt(total_sq);
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& p = *params[i].second;
    if (!p.trainable) continue;
    const Tensor& expected = ref_params[i].second->grad;
    double ref_sq = 0;
    for (float v : expected.span()) ref_sq += static_cast<double>(v) * v;
    const double ref_norm = std::sqrt(ref_sq);
    const Tensor got = p.grad.to(Device::CPU);
    const double e = ref_norm < 1e-6 * total ? rel_error(got, expected) * ref_norm / total : rel_error(got, expected);
    const bool scalar = !judge_scalars && p.value.numel() == 1;
    double& worst = scalar ? r.scalar_worst : r.worst;
    std::string& name = scalar ? r.scalar_name : r.worst_name;
    if (!(e <= worst)) worst = e, name = params[i].first;
  }
  return r;
}

}  // namespace mf::test
