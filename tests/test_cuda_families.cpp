// The paper mixers' own networks on the GPU (src/ops/cuda/cuda_family_ops.h): for the small golden
// model of each family (RaftMLP, MS-MLP, Strip-MLP, CAS-ViT, WaveMix, iFormer, AFFNet), the cuda
// backend's logits against the authors' float64 ones (the CPU tests' bar), and one training step's
// loss and every parameter gradient against the reference backend's (double sums), with the
// parameters on the GPU as `train --backend cuda` keeps them. Each test skips itself where the build
// has no CUDA, the machine no GPU, or the backend does not offer the family's ops
// (METAFORMER_CUDA_FAMILY_OPS=0).
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "nn/module.h"
#include "ops/backend.h"
#include "ops/ops.h"
#include "gpu_skip.h"
#include "test_util.h"
#include "train/optimizer.h"
#include "train/targets.h"

namespace mf::test {
namespace {

// float32 against the authors' float64 logits, as tests/test_golden.cpp (AFFNet's ~20 layers with FFTs:
// 1e-4, as tests/test_affnet.cpp); and float32 sums in another order against the reference backend's
// double ones for a gradient (tests/test_train_golden.cpp).
constexpr double kLogitTolerance = 2e-5, kAffNetLogitTolerance = 1e-4, kGradTolerance = 1e-4;

class CudaFamily : public ::testing::TestWithParam<std::string> {};

// Skips unless the cuda backend has every op of the model, forward and backward.
#define MF_REQUIRE_GPU_OPS(model)                                                                             \
  do {                                                                                                        \
    MF_REQUIRE_GPU();                                                                                         \
    std::set<OpKind> ops;                                                                                     \
    (model).all_ops(ops);                                                                                     \
    for (OpKind op : ops)                                                                                     \
      if (op != OpKind::NchwToNhwc &&                                                                         \
          (!get_backend("cuda").supports(op) || !get_backend("cuda").supports_backward(op)))                  \
        GTEST_SKIP() << op_name(op) << " is not offered on the GPU (METAFORMER_CUDA_FAMILY_OPS=0)";          \
  } while (0)

std::string dir_of(const std::string& family) {
  return family.rfind("affnet", 0) == 0 ? data_path("affnet/" + family.substr(7)) : data_path("golden/" + family);
}

TEST_P(CudaFamily, LogitsMatchTheAuthorsCode) {
  const std::string dir = dir_of(GetParam());
  MetaFormer model(load_config(dir + "/config.json"));
  MF_REQUIRE_GPU_OPS(model);
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  const SafeTensors io = SafeTensors::open(dir + "/io.safetensors");
  Ctx ctx;
  ctx.exec.backend = &get_backend("cuda");
  const Tensor logits = model.forward_nchw(ctx, io.load("input")).to(Device::CPU);
  const double tolerance = GetParam().rfind("affnet", 0) == 0 ? kAffNetLogitTolerance : kLogitTolerance;
  EXPECT_LE(rel_error(logits, io.load("logits")), tolerance) << GetParam();
}

TEST_P(CudaFamily, GradientsOfATrainingStepMatchTheReference) {
  const std::string dir = dir_of(GetParam());
  MetaFormer on_gpu(load_config(dir + "/config.json")), on_ref(load_config(dir + "/config.json"));
  MF_REQUIRE_GPU_OPS(on_gpu);
  const SafeTensors weights = SafeTensors::open(dir + "/weights.safetensors");
  load_weights(on_gpu, weights);
  load_weights(on_ref, weights);
  move_parameters(on_gpu, Device::CUDA);
  const Tensor x = SafeTensors::open(dir + "/io.safetensors").load("input");
  std::vector<int64_t> labels;
  for (int64_t b = 0; b < x.dim(0); ++b) labels.push_back((b * 7 + 3) % on_ref.config().num_classes);
  const Tensor targets = smoothed_targets(labels, on_ref.config().num_classes, 0.1);

  auto step = [&](MetaFormer& model, const std::string& backend) {
    AdamW opt(model, AdamWOptions{1e-3, 0.9, 0.999, 1e-8, 0.05});
    opt.zero_grad();
    Ctx ctx;
    ctx.exec.backend = &get_backend(backend);
    ctx.training = true;
    Tensor dlogits;
    const double loss = op::cross_entropy(ctx.exec, model.forward_nchw(ctx, x), targets, dlogits);
    model.backward(ctx, dlogits);
    std::vector<std::pair<std::string, Tensor>> grads;
    for (auto& [name, p] : opt.params()) grads.emplace_back(name, p->grad.to(Device::CPU));
    return std::make_pair(loss, grads);
  };
  const auto [loss_gpu, grads_gpu] = step(on_gpu, "cuda");
  const auto [loss_ref, grads_ref] = step(on_ref, "ref");
  EXPECT_NEAR(loss_gpu, loss_ref, kGradTolerance * std::fabs(loss_ref)) << GetParam();
  ASSERT_EQ(grads_gpu.size(), grads_ref.size());
  // A bias followed by a norm that subtracts its mean has a gradient of exactly zero, which both
  // backends give as rounding noise: those are held to 1e-6 of the whole gradient's norm, as
  // tests/test_train_golden.cpp does.
  double total_sq = 0;
  for (const auto& [name, g] : grads_ref)
    for (float v : g.span()) total_sq += static_cast<double>(v) * v;
  const double total = std::sqrt(total_sq);
  for (size_t i = 0; i < grads_ref.size(); ++i) {
    const auto& [name, ref] = grads_ref[i];
    ASSERT_EQ(grads_gpu[i].first, name);
    double ref_sq = 0;
    for (float v : ref.span()) ref_sq += static_cast<double>(v) * v;
    const double ref_norm = std::sqrt(ref_sq), err = rel_error(grads_gpu[i].second, ref) * ref_norm;
    if (ref_norm < 1e-6 * total)
      EXPECT_LE(err, 1e-6 * total) << GetParam() << " " << name << " (zero true gradient)";
    else
      EXPECT_LE(err / ref_norm, kGradTolerance) << GetParam() << " " << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, CudaFamily,
                         ::testing::Values("raftmlp", "msmlp", "stripmlp", "casvit", "wavemix", "wavemix_strided",
                                           "iformer", "affnet_tiny", "affnet_tiny_bn"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace mf::test
