// Whole-model backward against finite differences, for the golden model of every family: the
// derivative of the loss along a random direction in parameter space, and along one in input space.
// A coarse check (float32 forward passes bound it at about 1e-3); the exact check is against PyTorch
// in test_train_golden.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "io/safetensors.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "ops/ref/ref_backend.h"
#include "gpu_skip.h"
#include "test_util.h"
#include "train/targets.h"

namespace mf::test {
namespace {

class ModelBackward : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelBackward, DirectionalDerivativeMatchesFiniteDifferences) {
  const std::string dir = data_path("golden/" + GetParam());
  MetaFormer model(load_config(dir + "/config.json"));
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  // Models with token matrices take only their nominal size.
  const auto& c = model.config();
  const bool fixed = GetParam() == "randformer" || c.isotropic();
  const int64_t size = fixed ? c.input.size : 29;
  const Tensor x = random_tensor({2, size, size, 3}, 11);
  const Tensor targets = smoothed_targets({3, 7}, model.config().num_classes, 0.1);
  Ctx ctx;
  ctx.exec.backend = &get_backend("ref");
  auto loss = [&](bool backward) {
    ctx.training = backward;
    Tensor logits = model.run(ctx, x), dl;
    const double l = op::cross_entropy(ctx.exec, logits, targets, dl);
    if (backward) model.backward(ctx, dl);
    return l;
  };
  // Central differences err by O(ε²·curvature) and by float32 rounding of the loss (O(1e-7 / ε)):
  // at ε = 1e-3 the curvature term alone reached 3.6% for MambaOut-rw; 2.5e-4 keeps both well
  // inside the 2% bound for every family.
  const DirectionalDerivative d = directional_derivative(model, loss, 2.5e-4f);
  EXPECT_NEAR(d.numeric, d.analytic, 2e-2 * std::fabs(d.analytic)) << GetParam();
}

// The fp32 cuda backend with the switch `var` set on each call: "1" for the run asked to fuse, "0" for
// the other (the backend reads these switches on each call). The test unsets `var` when done.
std::function<Backend&(bool)> cuda_switched(const char* var) {
  return [var](bool on) -> Backend& {
    setenv(var, on ? "1" : "0", 1);
    return get_backend("cuda");
  };
}

// The reference backend with Backend::folds_layer_scales on: the block then runs its layer-scaled halves
// through linear_scaled_residual / pool_branch and their backward ops (whose defaults are the separate
// ops again), as it does on the CUDA backend with METAFORMER_CUDA_FOLD_LS=1. The block's wiring of
// those paths (what it saves, whose backward it calls, where the scales' gradients go) is so checked
// without a GPU; the CUDA kernels are the op harness's (mlp_train_scaled/*, pool_branch_train/*).
class FoldingRefBackend : public RefBackend {
 public:
  bool folds_layer_scales() const override { return true; }
};

double l2_norm(const Tensor& t) {
  double s = 0;
  const float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) s += double(p[i]) * p[i];
  return std::sqrt(s);
}

// A golden model, its trainable parameters, and one training step's input and targets.
struct GoldenStep {
  explicit GoldenStep(const std::string& family)
      : dir(data_path("golden/" + family)), model(load_config(dir + "/config.json")) {
    load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
    targets = smoothed_targets({3, 7}, model.config().num_classes, 0.1);
    for (auto& [name, p] : model.named_parameters())
      if (p->trainable && !p->buffer) params.emplace_back(name, p);
  }
  struct Result {
    double loss = 0;
    OpProfile profile;  // each op kind's calls
    std::vector<Tensor> grads;
  };
  // One forward and backward on `backend` from zeroed gradients: the loss, the ops run, every gradient.
  Result run(Backend& backend) {
    for (auto& [name, p] : params) {
      if (!p->grad.defined()) p->grad = Tensor::empty(p->value.shape());
      p->grad.zero();
    }
    Result r;
    Ctx ctx;
    ctx.exec.backend = &backend;
    ctx.exec.profile = &r.profile;
    ctx.training = true;
    Tensor dl;
    r.loss = op::cross_entropy(ctx.exec, model.run(ctx, x), targets, dl);
    model.backward(ctx, dl);
    ctx.exec.backend->synchronize();
    for (auto& [name, p] : params) r.grads.push_back(p->grad.to(Device::CPU).clone());
    return r;
  }
  std::string dir;
  MetaFormer model;
  Tensor x = random_tensor({2, 29, 29, 3}, 11);
  Tensor targets;
  std::vector<std::pair<std::string, Parameter*>> params;
};

int64_t calls(const GoldenStep::Result& r, OpKind op) { return r.profile.calls[static_cast<size_t>(op)]; }

// The golden model `family` trained one step (loss and every parameter gradient) on the backend that
// `backend(fold)` gives, without and with folded layer scales: the same loss to 1e-6 and gradients to
// `tolerance` relative, every half folded in the second run (no scaled_residual op ran on its own),
// none in the first. Parameters named `…<zero_suffix>` are the exception: the caller knows their exact
// gradient is zero, so both runs' values are float rounding in sums that cancel, and their relative
// difference means nothing. Each run's value is held to zero instead: its norm at most 1e-4 of the
// gradient of the same module's weight, whose sums have the same terms.
void expect_folding_changes_no_gradient(const std::string& family, const std::function<Backend&(bool fold)>& backend,
                                        double tolerance, const std::string& zero_suffix) {
  GoldenStep golden(family);
  const auto& params = golden.params;
  const GoldenStep::Result separate = golden.run(backend(false)), folded = golden.run(backend(true));
  EXPECT_GT(calls(separate, OpKind::ScaledResidual), 0);
  EXPECT_EQ(calls(folded, OpKind::ScaledResidual), 0);
  EXPECT_NEAR(folded.loss, separate.loss, 1e-6 * std::fabs(separate.loss));
  for (size_t k = 0; k < params.size(); ++k) {
    const std::string& name = params[k].first;
    if (!zero_suffix.empty() && name.ends_with(zero_suffix)) {
      const std::string weight = name.substr(0, name.size() - std::string("bias").size()) + "weight";
      size_t w = 0;
      while (w < params.size() && params[w].first != weight) ++w;
      ASSERT_LT(w, params.size()) << weight;
      for (const GoldenStep::Result* run : {&separate, &folded}) {
        // (a 1×1 map, PoolFormer's last stage here: pool − I is zero, and so are both gradients)
        const double bias_norm = l2_norm(run->grads[k]), weight_norm = l2_norm(run->grads[w]);
        EXPECT_LE(bias_norm, 1e-4 * weight_norm) << name << (run == &folded ? " folded" : " separate");
        std::printf("%s %s: |grad| = %.2e, |%s grad| = %.2e (exactly 0 in exact arithmetic)\n", name.c_str(),
                    run == &folded ? "folded" : "separate", bias_norm, weight.c_str(), weight_norm);
      }
      continue;
    }
    EXPECT_LE(rel_error(folded.grads[k], separate.grads[k]), tolerance) << name;
  }
}

class FoldedLayerScales : public ::testing::TestWithParam<std::string> {};

// PoolFormer v1's pooling halves: the norm's bias gets an exact gradient of zero (pool − I maps a
// constant to zero, count_include_pad=False); compared run against run, its two rounding noises
// differed by 1.1–1.7 relative on an H100 (2026-12-07), every other gradient within 1e-5.
const std::string kPoolNormBias = ".norm1.bias";

// Float sums in another order (the branch output recomputed): 1e-5 relative, the op cases' bar.
TEST_P(FoldedLayerScales, GiveTheGradientsOfTheSeparateOps) {
  FoldingRefBackend folding;
  expect_folding_changes_no_gradient(GetParam(), [&](bool fold) -> Backend& {
    return fold ? folding : get_backend("ref");
  }, 1e-5, kPoolNormBias);
}

// The same on the GPU in fp32 (TF32 off), where the folds are the CUDA backend's own kernels
// (METAFORMER_CUDA_FOLD_LS, read on each call): fc2 with ls ⊙ W2 and the residual in its epilogue,
// the pooling half in one kernel, and their backward passes; the fp32 op cases' bar, 1e-5.
TEST_P(FoldedLayerScales, GiveTheGradientsOfTheSeparateOpsOnTheGpu) {
  MF_REQUIRE_GPU();
  expect_folding_changes_no_gradient(GetParam(), cuda_switched("METAFORMER_CUDA_FOLD_LS"), 1e-5, kPoolNormBias);
  unsetenv("METAFORMER_CUDA_FOLD_LS");
}

// The family whose halves have layer scales and no res scales (PoolFormer v1; v2 has res scales).
INSTANTIATE_TEST_SUITE_P(Families, FoldedLayerScales, ::testing::Values("poolformer"));

// The reference backend with Backend::fuses_act_into_depthwise on: SepConv then runs act1 and dwconv
// in training through act_depthwise_conv2d and its backward (whose defaults are the separate ops
// again), as on the CUDA backend (METAFORMER_CUDA_ACT_DW). Checks the mixer's wiring of that path
// (what act1 keeps, whose backward runs, where StarReLU's scalar gradients go) without a GPU; the
// CUDA kernels are the op harness's (act_depthwise_train/*).
class ActDepthwiseRefBackend : public RefBackend {
 public:
  bool fuses_act_into_depthwise() const override { return true; }
};

// Two runs of one golden step: the same loss to 1e-6 and every gradient to `tolerance` relative.
void expect_same_step(const GoldenStep& golden, const GoldenStep::Result& a, const GoldenStep::Result& b,
                      double tolerance) {
  EXPECT_NEAR(b.loss, a.loss, 1e-6 * std::fabs(a.loss));
  for (size_t k = 0; k < golden.params.size(); ++k)
    EXPECT_LE(rel_error(b.grads[k], a.grads[k]), tolerance) << golden.params[k].first;
}

int64_t count_modules(const Module& m, const std::string& kind) {
  int64_t n = m.kind() == kind ? 1 : 0;
  for (const auto& [name, child] : m.children()) n += count_modules(*child, kind);
  return n;
}

// The golden model `family` trained one step on the backend that `backend(fuse)` gives, without and
// with act1 → dwconv as one op: the same loss to 1e-6 and gradients to `tolerance` relative, and in
// the second run every SepConv fused (two activation ops fewer each, its forward's and backward's;
// the depthwise convolutions as many).
void expect_act_depthwise_changes_no_gradient(const std::string& family,
                                              const std::function<Backend&(bool fuse)>& backend, double tolerance) {
  GoldenStep golden(family);
  const int64_t mixers = count_modules(golden.model, "SepConv");
  ASSERT_GT(mixers, 0) << family;
  const GoldenStep::Result separate = golden.run(backend(false)), fused = golden.run(backend(true));
  EXPECT_EQ(calls(separate, OpKind::Activation) - calls(fused, OpKind::Activation), 2 * mixers);
  EXPECT_EQ(calls(fused, OpKind::DepthwiseConv2d), calls(separate, OpKind::DepthwiseConv2d));
  expect_same_step(golden, separate, fused, tolerance);
}

class FusedActDepthwise : public ::testing::TestWithParam<std::string> {};

// The default compositions are the separate ops, in the same order: the same bits (1e-6 leaves room
// for nothing but a reordering).
TEST_P(FusedActDepthwise, GivesTheGradientsOfTheSeparateOps) {
  ActDepthwiseRefBackend fusing;
  expect_act_depthwise_changes_no_gradient(GetParam(), [&](bool fuse) -> Backend& {
    return fuse ? fusing : get_backend("ref");
  }, 1e-6);
}

// The same on the GPU in fp32 (TF32 off): the depthwise kernel applies act as it stages its input, the
// dW from act(pre) materialised (the tiled kernel that applies act itself is bf16's: op cases), dh
// by the same kernel as the separate ops', then the activation's backward; the fp32 op cases' bar.
TEST_P(FusedActDepthwise, GivesTheGradientsOfTheSeparateOpsOnTheGpu) {
  MF_REQUIRE_GPU();
  expect_act_depthwise_changes_no_gradient(GetParam(), cuda_switched("METAFORMER_CUDA_ACT_DW"), 1e-5);
  unsetenv("METAFORMER_CUDA_ACT_DW");
}

// The families with SepConv mixers (CAFormer's first two stages).
INSTANTIATE_TEST_SUITE_P(Families, FusedActDepthwise, ::testing::Values("convformer", "caformer"));

// The reference backend with Backend::fuses_residual_into_linear on: a training half with no scale
// and no drop path then ends in op::linear_residual (SepConv's pwconv2, attention's proj, the gated
// CNN's and the MLP's fc2), whose default is linear then scaled_residual again, as on the CUDA backend
// with METAFORMER_CUDA_RES_LINEAR=1. Checks the wiring (which halves fuse, what the Linears keep,
// whose backward runs) without a GPU; the CUDA GEMM is the op harness's (linear_residual/*).
class ResidualLinearRefBackend : public RefBackend {
 public:
  bool fuses_residual_into_linear() const override { return true; }
};

// The golden model `family` trained one step without and with the fused residuals: `fused_halves`
// scaled_residual ops fewer in the second run, the same loss and gradients to `tolerance`.
void expect_residual_linear_changes_no_gradient(const std::string& family, int64_t fused_halves,
                                                const std::function<Backend&(bool fuse)>& backend, double tolerance) {
  GoldenStep golden(family);
  const GoldenStep::Result separate = golden.run(backend(false)), fused = golden.run(backend(true));
  EXPECT_EQ(calls(separate, OpKind::ScaledResidual) - calls(fused, OpKind::ScaledResidual), fused_halves) << family;
  expect_same_step(golden, separate, fused, tolerance);
}

struct FusedHalves {
  const char* family;
  int64_t halves;  // the golden config's halves without scales, which fuse
};
void PrintTo(const FusedHalves& f, std::ostream* os) { *os << f.family; }

class ResidualInLinear : public ::testing::TestWithParam<FusedHalves> {};

// The same ops in the same order: the same bits (1e-6 leaves room for nothing but a reordering).
TEST_P(ResidualInLinear, GivesTheGradientsOfTheSeparateOps) {
  ResidualLinearRefBackend fusing;
  expect_residual_linear_changes_no_gradient(GetParam().family, GetParam().halves, [&](bool fuse) -> Backend& {
    return fuse ? fusing : get_backend("ref");
  }, 1e-6);
}

// The same on the GPU in fp32 (TF32 off): the residual added as the GEMM's C, in its own order; the
// fp32 op cases' bar.
TEST_P(ResidualInLinear, GivesTheGradientsOfTheSeparateOpsOnTheGpu) {
  MF_REQUIRE_GPU();
  expect_residual_linear_changes_no_gradient(GetParam().family, GetParam().halves,
                                             cuda_switched("METAFORMER_CUDA_RES_LINEAR"), 1e-5);
  unsetenv("METAFORMER_CUDA_RES_LINEAR");
}

// The golden configs (depths 1, 1, 2, 1; res scales from stage 3): ConvFormer's and CAFormer's
// stages 1–2, two halves a block; MambaOut's five blocks, one half each; IdentityFormer's stages 1–2
// MLP halves only (the identity mixer ends in no Linear).
INSTANTIATE_TEST_SUITE_P(Families, ResidualInLinear,
                         ::testing::Values(FusedHalves{"convformer", 4}, FusedHalves{"caformer", 4},
                                           FusedHalves{"mambaout", 5}, FusedHalves{"identityformer", 2}),
                         [](const auto& info) { return std::string(info.param.family); });

// The reference backend with Backend::convolves_channel_slices on: MambaOut's gated CNN then runs
// depthwise_conv2d_slice and gated_conv_backward in training, whose defaults are the separate ops
// (channel_slice, depthwise_conv2d; glu_backward, the convolution's backward on the slice's copy,
// channel_slice_backward) again, as on the CUDA backend with METAFORMER_CUDA_SLICE_DW=1.
class SliceConvRefBackend : public RefBackend {
 public:
  bool convolves_channel_slices() const override { return true; }
};

void expect_slice_conv_changes_no_gradient(const std::string& family,
                                           const std::function<Backend&(bool slices)>& backend, double tolerance) {
  GoldenStep golden(family);
  const GoldenStep::Result separate = golden.run(backend(false)), sliced = golden.run(backend(true));
  EXPECT_GT(calls(separate, OpKind::ChannelSlice), 0) << family;
  EXPECT_EQ(calls(sliced, OpKind::ChannelSlice), 0) << family;
  expect_same_step(golden, separate, sliced, tolerance);
}

class GatedConvOnSlices : public ::testing::TestWithParam<std::string> {};

TEST_P(GatedConvOnSlices, GivesTheGradientsOfTheSeparateOps) {
  SliceConvRefBackend slicing;
  expect_slice_conv_changes_no_gradient(GetParam(), [&](bool slices) -> Backend& {
    return slices ? slicing : get_backend("ref");
  }, 1e-6);
}

// On the GPU in fp32: the slice read and written where it lies by the separate ops' kernels.
TEST_P(GatedConvOnSlices, GivesTheGradientsOfTheSeparateOpsOnTheGpu) {
  MF_REQUIRE_GPU();
  expect_slice_conv_changes_no_gradient(GetParam(), cuda_switched("METAFORMER_CUDA_SLICE_DW"), 1e-5);
  unsetenv("METAFORMER_CUDA_SLICE_DW");
}

INSTANTIATE_TEST_SUITE_P(Families, GatedConvOnSlices, ::testing::Values("mambaout", "mambaout_rw"),
                         [](const auto& info) { return info.param; });

INSTANTIATE_TEST_SUITE_P(Families, ModelBackward,
                         ::testing::Values("poolformer", "poolformerv2", "convformer", "caformer", "identityformer",
                                           "randformer", "mambaout", "mambaout_rw", "mixer", "gmixer", "resmlp",
                                           "gmlp"));

}  // namespace
}  // namespace mf::test
