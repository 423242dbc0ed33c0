// Training against PyTorch: for the small golden model of every family, the loss and the gradient of
// every parameter for one batch (label smoothing 0.1), and the losses of three AdamW steps, from
// tools/golden/make_train_golden.py (timm's models, float64). Tolerance 1e-4 relative for each
// gradient tensor and each loss (docs/tolerances.md), except where float32 arithmetic itself cannot
// reach it: the golden file also holds, per tensor, how far PyTorch's own float32 gradient lands from
// the float64 one, and where that exceeds 1e-4 (one tensor: caformer's stage-0 StarReLU bias, a sum of
// 23 040 terms that cancel to a thousandth of their size; PyTorch float32: 1.6e-4) ours must be no
// worse than PyTorch's. A tensor whose true gradient is zero
// (PoolFormer's norm1 bias: pool(x + b) - (x + b) cancels any per-channel constant b; PyTorch's float64
// value is below 1e-9 of the whole gradient) has no relative error to speak of: it must instead be
// below 1e-6 of the norm of the whole gradient, float32 rounding noise.
//
// The same check runs on the cuda backend (fp32, TF32 off) when this build has it and a GPU is
// present: the parameters on the GPU (as `train --backend cuda` keeps them), forward, cross-entropy,
// backward and AdamW there (issue 13's gradient parity). A family with an op whose backward has no
// CUDA kernel yet is skipped, naming the op.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "ops/backend.h"
#include "gpu_skip.h"
#include "test_util.h"
#include "train/optimizer.h"
#include "train/targets.h"

namespace mf::test {
namespace {

constexpr double kTolerance = 1e-4;

struct Case {
  std::string family, backend;
};

class TrainGolden : public ::testing::TestWithParam<Case> {};

double loss_of(MetaFormer& model, Ctx& ctx, const Tensor& x, const Tensor& targets, bool backward) {
  Tensor logits = model.forward_nchw(ctx, x);
  Tensor dlogits;
  const double loss = op::cross_entropy(ctx.exec, logits, targets, dlogits);
  if (backward) model.backward(ctx, dlogits);
  return loss;
}

TEST_P(TrainGolden, GradientsAndAdamWStepsMatchPyTorch) {
  const auto& [family, backend] = GetParam();
  const std::string dir = data_path("golden/" + family);
  MetaFormer model(load_config(dir + "/config.json"));
  if (backend == "cuda") {
    MF_REQUIRE_GPU();
    std::set<OpKind> ops;
    model.all_ops(ops);
    // (The input's layout change is never differentiated: no gradient flows into the data.)
    for (OpKind op : ops)
      if (op != OpKind::NchwToNhwc && !get_backend("cuda").supports_backward(op))
        GTEST_SKIP() << op_name(op) << " has no CUDA backward yet";
  }
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  // On the GPU the parameters live there, as in `train --backend cuda`: gradients and AdamW too.
  if (backend == "cuda") move_parameters(model, Device::CUDA);
  const SafeTensors io = SafeTensors::open(dir + "/train.safetensors");
  const Tensor x = io.load("input");
  const Tensor targets = smoothed_targets(io.load_int("labels"), model.config().num_classes, 0.1);

  Ctx ctx;
  ctx.exec.backend = &get_backend(backend);
  ctx.training = true;
  AdamW opt(model, AdamWOptions{1e-3, 0.9, 0.999, 1e-8, 0.05});
  opt.zero_grad();
  const double loss = loss_of(model, ctx, x, targets, true);
  EXPECT_NEAR(loss, io.load("loss").data()[0], kTolerance * std::fabs(loss));
  double total_sq = 0;
  for (auto& [name, p] : opt.params())
    for (float g : io.load("grad." + name).span()) total_sq += static_cast<double>(g) * g;
  const double total = std::sqrt(total_sq);
  int checked = 0;
  for (auto& [name, p] : opt.params()) {
    const std::string key = "grad." + name;
    ASSERT_TRUE(io.contains(key)) << key;
    const Tensor ref = io.load(key);
    double ref_norm = 0;
    for (float g : ref.span()) ref_norm += static_cast<double>(g) * g;
    ref_norm = std::sqrt(ref_norm);
    const double err = rel_error(p->grad.to(Device::CPU), ref) * ref_norm;  // ||g - ref||
    const double pytorch_fp32 = io.load("fp32_error." + name).data()[0];
    if (ref_norm < 1e-9 * total)
      EXPECT_LE(err, 1e-6 * total) << family << " " << name << " (zero true gradient)";
    else
      EXPECT_LE(err / ref_norm, std::max(kTolerance, pytorch_fp32))
          << family << " " << name << " (PyTorch float32: " << pytorch_fp32 << ")";
    ++checked;
  }
  int expected = 0;
  for (const auto& n : io.names()) expected += n.rfind("grad.", 0) == 0;
  EXPECT_EQ(checked, expected) << "every trainable parameter, and only those";

  const Tensor losses = io.load("losses");
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    const double l = loss_of(model, ctx, x, targets, true);
    EXPECT_NEAR(l, losses.data()[step], kTolerance * std::fabs(losses.data()[step])) << family << " step " << step;
    opt.step(1e-3);
  }
  ctx.training = false;
  const double last = loss_of(model, ctx, x, targets, false);
  EXPECT_NEAR(last, losses.data()[3], kTolerance * std::fabs(losses.data()[3])) << family << " after 3 steps";
}

std::vector<Case> cases() {
  std::vector<Case> v;
  for (const char* f : {"poolformer", "poolformerv2", "convformer", "caformer", "identityformer", "randformer",
                        "mambaout", "mambaout_rw", "mixer", "gmixer", "resmlp", "gmlp"})
    for (const char* b : {"cpu", "ref", "cuda"}) v.push_back({f, b});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Families, TrainGolden, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.family + "_" + info.param.backend; });

}  // namespace
}  // namespace mf::test
