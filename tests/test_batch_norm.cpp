// BatchNorm2d (channels-last) as PyTorch defines it: training-mode batch statistics and the
// running-statistics update (momentum, eps, unbiased variance, num_batches_tracked), eval mode, the
// state-dict keys and dtypes, and folding into a neighbouring conv or linear layer at inference.
// The op itself (forward and backward, train and eval, ref and cpu) is in the op harness
// (tests/op_cases.cpp: batch_norm_eval/*, batch_norm_train/*).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "io/safetensors.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "test_util.h"

namespace mf::test {
namespace {

NormSpec bn_spec(double momentum = 0.1) { return {"batch_norm", 1e-5, true, momentum}; }

Ctx make_ctx(bool training) {
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  ctx.training = training;
  return ctx;
}

// Per-channel mean and biased variance of x [..., C], in double: the test's own arithmetic.
void stats(const Tensor& x, std::vector<double>& mean, std::vector<double>& var) {
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  mean.assign(static_cast<size_t>(C), 0);
  var.assign(static_cast<size_t>(C), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) mean[static_cast<size_t>(c)] += x.data()[r * C + c] / static_cast<double>(rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const double d = x.data()[r * C + c] - mean[static_cast<size_t>(c)];
      var[static_cast<size_t>(c)] += d * d / static_cast<double>(rows);
    }
}

void randomise(Module& m, uint64_t seed) {
  for (auto& [name, p] : m.named_parameters()) {
    if (p->integer) continue;
    const bool positive = name.find("running_var") != std::string::npos;
    p->value.copy_from(random_tensor(p->value.shape(), seed++, positive ? 0.5f : -1.f, positive ? 2.f : 1.f));
  }
}

TEST(BatchNorm, StateDictKeysAndCountAsPyTorch) {
  Norm bn(bn_spec(), 6);
  std::vector<std::string> names;
  for (auto& [n, p] : bn.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}));
  EXPECT_EQ(bn.num_parameters(), 12);  // buffers are not parameters
  EXPECT_EQ(bn.num_batches_tracked()->value.ndim(), 0);
  EXPECT_EQ(bn.kind(), "BatchNorm2d");
  Ctx ctx = make_ctx(false);
  initialize_parameters(bn, 1);  // nn.BatchNorm2d's initial state: identity in eval mode
  const Tensor x = random_tensor({2, 3, 3, 6}, 5);
  EXPECT_LT(max_abs_diff(bn.run(ctx, x), x), 1e-4);
}

// PyTorch (_BatchNorm.forward): y normalised with the biased batch variance; running_mean and
// running_var move by `momentum` towards the batch mean and the UNBIASED batch variance;
// num_batches_tracked counts the training forwards.
TEST(BatchNorm, TrainingUpdatesRunningStatisticsAsPyTorch) {
  Norm bn(bn_spec(0.1), 3);
  randomise(bn, 3);
  const std::vector<float> rm0(bn.running_mean()->value.data(), bn.running_mean()->value.data() + 3);
  const std::vector<float> rv0(bn.running_var()->value.data(), bn.running_var()->value.data() + 3);
  const Tensor x = random_tensor({2, 3, 2, 3}, 9, 1.f, 5.f);
  Ctx ctx = make_ctx(true);
  const Tensor y = bn.run(ctx, x);
  std::vector<double> mean, var;
  stats(x, mean, var);
  const double n = 12;
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(bn.running_mean()->value.data()[c], 0.9 * rm0[c] + 0.1 * mean[c], 1e-6);
    EXPECT_NEAR(bn.running_var()->value.data()[c], 0.9 * rv0[c] + 0.1 * var[c] * n / (n - 1), 1e-6);
  }
  EXPECT_EQ(bn.num_batches_tracked()->value.data()[0], 1.f);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const auto c = static_cast<size_t>(i % 3);
    const double want = (x.data()[i] - mean[c]) / std::sqrt(var[c] + 1e-5) * bn.weight()->value.data()[c] +
                        bn.bias()->value.data()[c];
    EXPECT_NEAR(y.data()[i], want, 1e-5) << i;
  }
  bn.backward(ctx, random_tensor(x.shape(), 4));  // releases what forward kept
}

// momentum=None: the running statistics are the plain average over the batches seen.
TEST(BatchNorm, MomentumNoneIsTheCumulativeAverage) {
  Norm bn(bn_spec(-1), 2);
  initialize_parameters(bn, 1);
  const Tensor a = random_tensor({3, 2, 2, 2}, 1, 0.f, 2.f), b = random_tensor({3, 2, 2, 2}, 2, -3.f, 1.f);
  Ctx ctx = make_ctx(true);
  bn.run(ctx, a);
  bn.run(ctx, b);
  std::vector<double> ma, va, mb, vb;
  stats(a, ma, va);
  stats(b, mb, vb);
  const double unbias = 12.0 / 11.0;
  for (int c = 0; c < 2; ++c) {
    EXPECT_NEAR(bn.running_mean()->value.data()[c], (ma[c] + mb[c]) / 2, 1e-6);
    EXPECT_NEAR(bn.running_var()->value.data()[c], (va[c] + vb[c]) * unbias / 2, 1e-6);
  }
  EXPECT_EQ(bn.num_batches_tracked()->value.data()[0], 2.f);
}

TEST(BatchNorm, EvalNormalisesWithTheRunningStatistics) {
  Norm bn(bn_spec(), 4);
  randomise(bn, 8);
  const Tensor x = random_tensor({1, 3, 5, 4}, 2);
  Ctx ctx = make_ctx(false);
  const Tensor y = bn.run(ctx, x);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = i % 4;
    const double want = (x.data()[i] - bn.running_mean()->value.data()[c]) /
                            std::sqrt(bn.running_var()->value.data()[c] + 1e-5) * bn.weight()->value.data()[c] +
                        bn.bias()->value.data()[c];
    EXPECT_NEAR(y.data()[i], want, 1e-5);
  }
  EXPECT_EQ(bn.num_batches_tracked()->value.data()[0], 0.f);  // eval changes nothing
}

TEST(BatchNorm, TrainingNeedsMoreThanOneValuePerChannel) {
  Norm bn(bn_spec(), 4);
  initialize_parameters(bn, 1);
  Ctx ctx = make_ctx(true);
  try {
    bn.run(ctx, random_tensor({1, 1, 1, 4}, 1));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than one value per channel"), std::string::npos) << e.what();
  }
}

// num_batches_tracked is saved as I64 (PyTorch's dtype) and read back from I64 or float.
TEST(BatchNorm, NumBatchesTrackedRoundTripsAsInt64) {
  Norm bn(bn_spec(), 3);
  randomise(bn, 2);
  bn.num_batches_tracked()->value.data()[0] = 1234;
  const std::string path = (std::filesystem::temp_directory_path() / "mf_bn_roundtrip.safetensors").string();
  save_weights(bn, path);
  SafeTensors file = SafeTensors::open(path);
  EXPECT_EQ(file.info("num_batches_tracked").dtype, "I64");
  EXPECT_EQ(file.info("num_batches_tracked").shape.ndim(), 0);
  Norm back(bn_spec(), 3);
  load_weights(back, file);
  EXPECT_EQ(back.num_batches_tracked()->value.data()[0], 1234.f);
  EXPECT_EQ(max_abs_diff(back.running_var()->value, bn.running_var()->value), 0.0);
  std::filesystem::remove(path);
}

// The folded inference path (one conv with the BatchNorm multiplied in) against the unfolded one
// (conv, then batch_norm with the running statistics), on a MetaFormer stem and downsampling.
TEST(BatchNorm, FoldedConvMatchesUnfolded) {
  ConvSpec spec{3, 2, 1, bn_spec(), "conv", false, "gelu", true};
  for (const bool downsample : {false, true}) {
    std::unique_ptr<Module> m = downsample ? std::unique_ptr<Module>(std::make_unique<Downsampling>(5, 7, spec))
                                           : std::unique_ptr<Module>(std::make_unique<Stem>(5, 7, spec));
    m->assign_paths("m");
    randomise(*m, 21);
    const Tensor x = random_tensor({2, 9, 8, 5}, 6);
    Ctx ctx = make_ctx(false);
    const Tensor folded = m->run(ctx, x);
    auto params = m->named_parameters();
    auto value = [&](const std::string& n) -> const Tensor& {
      for (auto& [name, p] : params)
        if (name == n) return p->value;
      throw Error("no " + n);
    };
    const ConvGeometry g{3, 3, 2, 2, 1, 1};
    const Tensor conv = op::conv2d(ctx.exec, x, value("conv.weight"), &value("conv.bias"), g);
    const Tensor unfolded = op::batch_norm(ctx.exec, conv, value("norm.weight"), &value("norm.bias"),
                                           value("norm.running_mean"), value("norm.running_var"), 1e-5f);
    EXPECT_LT(rel_error(folded, unfolded), 1e-6) << (downsample ? "downsampling" : "stem");
  }
}

TEST(BatchNorm, FoldedLinearMatchesUnfolded) {
  Linear fc(6, 5, true);
  Norm bn(bn_spec(), 5);
  randomise(fc, 1);
  randomise(bn, 7);
  const Tensor x = random_tensor({3, 4, 6}, 3);
  Ctx ctx = make_ctx(false);
  const auto [w, b] = fold_batch_norm(fc.weight()->value, &fc.bias()->value, bn);
  const Tensor folded = op::linear(ctx.exec, x, w, &b);
  const Tensor unfolded = bn.run(ctx, fc.run(ctx, x));
  EXPECT_LT(rel_error(folded, unfolded), 1e-6);
}

}  // namespace
}  // namespace mf::test
