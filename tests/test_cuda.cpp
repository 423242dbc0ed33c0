// The CUDA backend (docs/cuda.md). Compiled into every build: without CUDA in the build, or without a
// GPU, the GPU tests are reported as skipped (not passed); the error paths a CPU machine can reach
// are tested there too.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <utility>
#include <vector>

#include "core/bf16_bits.h"
#include "core/error.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "io/safetensors.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "model/zoo.h"
#include "op_cases.h"
#include "ops/cuda/cuda_backend.h"
#include "gpu_skip.h"
#include "test_util.h"

namespace mf::test {
namespace {

void expect_clean_failure(const CliResult& r, const std::string& phrase) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(phrase), std::string::npos) << "stderr: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr: " << r.err;
}

TEST(CudaBackend, AbsentBuildOrGpuIsOneClearError) {
  if (built_with_cuda() && gpu_count() > 0) GTEST_SKIP() << "a GPU is present";
  try {
    get_backend("cuda");
    FAIL() << "get_backend(\"cuda\") succeeded without a GPU";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(m.find("no CUDA") != std::string::npos || m.find("needs a GPU") != std::string::npos ||
                m.find("no CUDA GPU") != std::string::npos)
        << m;
  }
}

TEST(CudaBackend, CliRefusesCudaWithoutAGpu) {
  if (built_with_cuda() && gpu_count() > 0) GTEST_SKIP() << "a GPU is present";
  const CliResult r = run_cli({"bench", "--model", "poolformer_s12", "--backend", "cuda", "--batch", "1", "--runs", "1"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr: " << r.err;
}

TEST(CudaBackend, DeviceThatDoesNotExist) {
  // Without a GPU this is the "no CUDA" error; with one, the index check. One line, exit 1 either way.
  const CliResult r = run_cli({"info", "--model", "poolformer_s12"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const CliResult bad = run_cli({"bench", "--model", "poolformer_s12", "--backend", "cuda", "--device", "cuda:99",
                                 "--batch", "1", "--runs", "1"});
  expect_clean_failure(bad, built_with_cuda() && gpu_count() > 0 ? "cuda:99 does not exist" : "cuda");
}

TEST(CudaBackend, DeviceNeedsTheCudaBackend) {
  expect_clean_failure(run_cli({"bench", "--model", "poolformer_s12", "--device", "cuda:0", "--batch", "1"}),
                       "needs --backend cuda");
}

// Cases whose result is not an activation: the cross-entropy cases return their mean loss (a number
// the dispatcher brings to the host), the optimizer's cases (optimizer_cases.cpp) the fp32 tensors
// they updated in place, concatenated on the host.
bool returns_host_summary(OpKind op) {
  return op == OpKind::CrossEntropy || op == OpKind::AdamWStep || op == OpKind::GradNorm || op == OpKind::EmaUpdate;
}

TEST(CudaBackend, EveryOpCaseMatchesTheReference) {
  MF_REQUIRE_GPU();
  Exec ref{&get_backend("ref"), nullptr};
  Exec gpu{&get_backend("cuda"), nullptr};
  int ran = 0;
  for (const auto& c : op_cases()) {
    if (!gpu.backend->supports(c.op)) continue;
    const Tensor y = c.run(gpu, 1);
    if (!returns_host_summary(c.op)) {
      EXPECT_EQ(y.device(), Device::CUDA) << c.name;
    }
    EXPECT_LE(rel_error(y.to(Device::CPU), c.run(ref, 1)), c.tolerance) << c.name;
    ++ran;
  }
  EXPECT_GT(ran, 50);
}

TEST(CudaBackend, EveryOpCaseMatchesTheReferenceInBf16) {
  MF_REQUIRE_GPU();
  Exec ref{&get_backend("ref"), nullptr};
  Exec gpu{&get_backend("cuda", Precision::bf16), nullptr};
  int ran = 0;
  for (const auto& c : op_cases()) {
    if (!gpu.backend->supports(c.op)) continue;
    const Tensor y = c.run(gpu, 1);
    if (!returns_host_summary(c.op)) {
      EXPECT_EQ(y.dtype(), DType::bf16) << c.name << ": the activations are stored in bf16";
    }
    EXPECT_LE(rel_error(y.to(Device::CPU), c.run(ref, 1)), forward_tolerance(c, *gpu.backend)) << c.name;
    ++ran;
  }
  EXPECT_GT(ran, 50);
}

// Every backward case the backend has against the reference backward, with grad_tolerance's bar
// (a cancelling sum in bf16 against Σ|terms|: gradient_errors).
void expect_backward_cases_match_the_reference(Backend& backend) {
  Exec ref{&get_backend("ref"), nullptr};
  Exec gpu{&backend, nullptr};
  int ran = 0;
  for (const auto& c : op_cases()) {
    if (!c.backward || !backend.supports(c.op) || !backend.supports_backward(c.op)) continue;
    const auto in = c.make_inputs(3);
    const Tensor dy = random_tensor(c.forward(ref, in).shape(), 77);
    const auto expected = c.backward(ref, in, dy);
    const auto got = c.backward(gpu, in, dy);
    ASSERT_EQ(got.size(), expected.size()) << c.name;
    const auto errors = gradient_errors(c, backend, in, dy, got, expected);
    for (size_t i = 0; i < errors.size(); ++i) {
      if (errors[i] < 0) continue;  // not computed on one side
      EXPECT_LE(errors[i], grad_tolerance(c, backend)) << c.name << ", gradient " << i;
    }
    ++ran;
  }
  EXPECT_GT(ran, 40);
}

// The backward passes the cuda backend has (issue 13), each op case's gradients against the reference
// backend's with the bar the CPU backends meet (OpCase::grad_tolerance), as test-backend-ops --mode grad.
TEST(CudaBackend, EveryBackwardCaseMatchesTheReference) {
  MF_REQUIRE_GPU();
  expect_backward_cases_match_the_reference(get_backend("cuda"));
}

// The same with bf16 activations (train --dtype bf16): fp32 inputs on the reference side, the bf16
// bar (inputs, dy and input gradients rounded to bf16), input gradients stored in bf16; as
// test-backend-ops --mode grad --dtype bf16.
TEST(CudaBackend, EveryBackwardCaseMatchesTheReferenceInBf16) {
  MF_REQUIRE_GPU();
  expect_backward_cases_match_the_reference(get_backend("cuda", Precision::bf16));
}

// METAFORMER_CUDA_COLSUM_FINISH=fused (a candidate: the column sums' last block of a tile adds the
// tile's partials, no finish kernel) adds them in the finish kernel's order, so every backward case
// gives the same bits with it as without, in fp32 and in bf16, whichever block finishes.
TEST(CudaBackend, FusedColumnFinishGivesTheSameBits) {
  MF_REQUIRE_GPU();
  int compared = 0;
  for (Precision precision : {Precision::fp32, Precision::bf16}) {
    Backend& backend = get_backend("cuda", precision);
    Exec gpu{&backend, nullptr};
    for (const auto& c : op_cases()) {
      if (!c.backward || !backend.supports(c.op) || !backend.supports_backward(c.op)) continue;
      const auto in = c.make_inputs(3);
      const Tensor dy = random_tensor(c.forward(Exec{&get_backend("ref"), nullptr}, in).shape(), 77);
      setenv("METAFORMER_CUDA_COLSUM_FINISH", "separate", 1);
      const auto separate = c.backward(gpu, in, dy);
      setenv("METAFORMER_CUDA_COLSUM_FINISH", "fused", 1);
      const auto fused = c.backward(gpu, in, dy);
      unsetenv("METAFORMER_CUDA_COLSUM_FINISH");
      ASSERT_EQ(separate.size(), fused.size()) << c.name;
      for (size_t i = 0; i < fused.size(); ++i) {
        if (!fused[i].defined()) continue;
        EXPECT_EQ(max_abs_diff(separate[i].to(Device::CPU), fused[i].to(Device::CPU)), 0.0)
            << c.name << ", gradient " << i << (precision == Precision::bf16 ? " (bf16)" : " (fp32)");
      }
      ++compared;
    }
  }
  EXPECT_GT(compared, 80);
}

// METAFORMER_CUDA_ATTN_FWD=head (the default: one CTA a sample and head, every key staged once) runs
// the tiled kernel's per-warp functions on the same key tiles in the same order, so the attention
// cases' outputs, and the training cases' gradients through the forward's statistics, keep their bits.
TEST(CudaBackend, AttentionByHeadsGivesTheSameBits) {
  MF_REQUIRE_GPU();
  Backend& backend = get_backend("cuda", Precision::bf16);
  Exec gpu{&backend, nullptr};
  int compared = 0;
  for (const auto& c : op_cases()) {
    if (c.name.rfind("attention", 0) != 0 || c.name.find(" d32") == std::string::npos) continue;
    const auto in = c.make_inputs(3);
    const Tensor dy = random_tensor(c.forward(Exec{&get_backend("ref"), nullptr}, in).shape(), 77);
    std::vector<Tensor> got[2];
    for (int head = 0; head < 2; ++head) {
      setenv("METAFORMER_CUDA_ATTN_FWD", head ? "head" : "tiles", 1);
      got[head].push_back(c.forward(gpu, in).to(Device::CPU));
      for (const Tensor& g : c.backward(gpu, in, dy)) got[head].push_back(g.defined() ? g.to(Device::CPU) : g);
      unsetenv("METAFORMER_CUDA_ATTN_FWD");
    }
    ASSERT_EQ(got[0].size(), got[1].size()) << c.name;
    for (size_t i = 0; i < got[0].size(); ++i) {
      if (!got[0][i].defined()) continue;
      EXPECT_EQ(max_abs_diff(got[0][i], got[1][i]), 0.0) << c.name << ", output " << i;
    }
    ++compared;
  }
  EXPECT_GE(compared, 8);  // N = 196, 49, 17 and 80 with heads of 32, forward and training
}

// METAFORMER_CUDA_POOL_TAPS=unrolled (the default: the 3×3 average pooling's nine loads issued together)
// adds the same taps in the loop's order, so the pooling cases' outputs and gradients keep their bits,
// in fp32 and bf16, and so do PoolFormer's mixer half with its output's statistics (pool_stats_kernel)
// and the MLP half's norm that takes them.
TEST(CudaBackend, UnrolledPoolTapsGiveTheSameBits) {
  MF_REQUIRE_GPU();
  int compared = 0;
  for (const Precision p : {Precision::fp32, Precision::bf16}) {
    Exec gpu{&get_backend("cuda", p), nullptr};
    for (const auto& c : op_cases()) {
      if (c.name.rfind("pool", 0) != 0) continue;
      const auto in = c.make_inputs(3);
      const Tensor dy = random_tensor(c.forward(Exec{&get_backend("ref"), nullptr}, in).shape(), 77);
      std::vector<Tensor> got[2];
      for (int unrolled = 0; unrolled < 2; ++unrolled) {
        setenv("METAFORMER_CUDA_POOL_TAPS", unrolled ? "unrolled" : "loop", 1);
        got[unrolled].push_back(c.forward(gpu, in).to(Device::CPU));
        if (c.backward)
          for (const Tensor& g : c.backward(gpu, in, dy)) got[unrolled].push_back(g.defined() ? g.to(Device::CPU) : g);
        unsetenv("METAFORMER_CUDA_POOL_TAPS");
      }
      ASSERT_EQ(got[0].size(), got[1].size()) << c.name;
      for (size_t i = 0; i < got[0].size(); ++i) {
        if (!got[0][i].defined()) continue;
        EXPECT_EQ(max_abs_diff(got[0][i], got[1][i]), 0.0) << c.name << " " << precision_name(p) << ", output " << i;
      }
      ++compared;
    }
    const int64_t C = 64;
    const Tensor image = random_tensor({2, C, 28, 27}, 21);
    const Tensor gw = random_tensor({C}, 22, 0.5f, 1.5f), gb = random_tensor({C}, 23), ls = random_tensor({C}, 24);
    const Tensor nw = random_tensor({C}, 25, 0.5f, 1.5f);
    const BranchNorm norm{BranchNorm::Type::group_norm1, &gw, &gb, 1e-5f};
    const Tensor x = op::nchw_to_nhwc(gpu, image);
    Tensor y[2], n[2];
    for (int unrolled = 0; unrolled < 2; ++unrolled) {
      setenv("METAFORMER_CUDA_POOL_TAPS", unrolled ? "unrolled" : "loop", 1);
      const Tensor branch = op::pool_branch(gpu, x, norm, 3, BranchScales{nullptr, &ls});
      EXPECT_TRUE(branch.derived(cuda::kGn1PartialsKey) != nullptr) << precision_name(p);
      n[unrolled] = op::group_norm1(gpu, branch, nw, nullptr, 1e-6f).to(Device::CPU);
      y[unrolled] = branch.to(Device::CPU);
      unsetenv("METAFORMER_CUDA_POOL_TAPS");
    }
    EXPECT_EQ(max_abs_diff(y[0], y[1]), 0.0) << "pool_branch " << precision_name(p);
    EXPECT_EQ(max_abs_diff(n[0], n[1]), 0.0) << "the norm from its statistics " << precision_name(p);
  }
  EXPECT_GE(compared, 30);  // 8 + 4 + 5 pooling cases, fp32 and bf16
}

// The AdamW step rewrites a weight's bf16 copy (the one the bf16 GEMMs read) as it updates the weight:
// after the step the copy is current, so the next forward launches no cast, and it holds the new
// weight rounded as the cast rounds. METAFORMER_CUDA_ADAMW_COPIES=0 leaves it stale (the next forward
// casts). CudaTraining.AdamWRefreshesTheBf16CopiesBitForBit compares whole runs of the two.
TEST(CudaOptimizer, AdamWStepLeavesACurrentBf16CopyOfTheWeight) {
  MF_REQUIRE_GPU();
  Exec gpu{&get_backend("cuda", Precision::bf16), nullptr};
  const AdamWScalars scalars{0.99995f, 0.1f, 0.999f, 0.001f, 0.0316f, 1e-8f, 0.01f};
  for (const bool copies : {true, false}) {
    Tensor w = random_tensor({33, 40}, 3).to(Device::CUDA);
    const Tensor g = random_tensor({33, 40}, 4).to(Device::CUDA);
    Tensor m = Tensor::zeros({33, 40}).to(Device::CUDA), v = Tensor::zeros({33, 40}).to(Device::CUDA);
    op::linear(gpu, random_tensor({5, 40}, 5), w, nullptr);  // makes the copy
    ASSERT_TRUE(w.derived(cuda::kBf16CopyKey)) << "the bf16 linear read no bf16 copy of the weight";
    if (!copies) setenv("METAFORMER_CUDA_ADAMW_COPIES", "0", 1);
    op::adamw_step(gpu, {{&w, &g, &m, &v, true}}, scalars);
    unsetenv("METAFORMER_CUDA_ADAMW_COPIES");
    const auto copy = w.derived(cuda::kBf16CopyKey);
    if (!copies) {
      EXPECT_FALSE(copy) << "with the casts, the step leaves the copy to the next forward";
      continue;
    }
    ASSERT_TRUE(copy) << "the step left the bf16 copy stale: the next forward would cast the weight again";
    const Tensor got = static_cast<const Tensor*>(copy.get())->to(Device::CPU), want = w.to(Device::CPU);
    ASSERT_EQ(got.numel(), want.numel());
    int64_t differ = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      const float r = bf16_bits_to_float(float_to_bf16_bits(want.data()[i]));
      differ += std::memcmp(&r, got.data() + i, sizeof r) != 0;
    }
    EXPECT_EQ(differ, 0) << "of " << want.numel() << " elements";
  }
}

// The MLP branch written over its input (op::mlp_branch_, for a block that owns the input): in the
// input's storage, and as close to the reference as the op's own bar (forward_tolerance). Not the bits
// of the same branch written into a new tensor: on an H100 (2026-12-06) cuBLASLt's product with C = D
// came out different in the last place from the same plan with C ≠ D (the fc2 residual epilogue), so
// the two are compared to the reference, not to each other; a second call into a new tensor must
// repeat the first bit for bit. An input another tensor shares is left alone.
TEST(CudaBackend, MlpBranchOverItsInputStaysInPlaceAndMatchesTheReference) {
  MF_REQUIRE_GPU();
  const Tensor image = random_tensor({2, 24, 7, 9}, 11);  // NCHW; the branch reads [2, 7, 9, 24]
  const Tensor w1 = random_tensor({96, 24}, 12), b1 = random_tensor({96}, 13), w2 = random_tensor({24, 96}, 14);
  const Tensor b2 = random_tensor({24}, 15), nw = random_tensor({24}, 16, 0.5f, 1.5f), nb = random_tensor({24}, 17);
  const Tensor ls = random_tensor({24}, 18);
  const Activation gelu{ActKind::GELU};
  Exec ref{&get_backend("ref"), nullptr};
  for (const Precision p : {Precision::fp32, Precision::bf16}) {
    for (const auto type : {BranchNorm::Type::layer_norm, BranchNorm::Type::group_norm1}) {
      Exec gpu{&get_backend("cuda", p), nullptr};
      const BranchNorm norm{type, &nw, &nb, 1e-5f};
      const BranchScales scales{nullptr, &ls};
      const std::string what = std::string(precision_name(p)) + (type == BranchNorm::Type::layer_norm ? " LN" : " GN");
      const Tensor expected = op::mlp_branch(ref, op::nchw_to_nhwc(ref, image), norm, w1, &b1, gelu, w2, &b2, scales);
      const double bar = p == Precision::fp32 ? 1e-5 : kBf16Tolerance;  // the mlp_branch op cases' bars
      const Tensor x = op::nchw_to_nhwc(gpu, image);
      const Tensor want = op::mlp_branch(gpu, x, norm, w1, &b1, gelu, w2, &b2, scales).to(Device::CPU);
      const Tensor again = op::mlp_branch(gpu, x, norm, w1, &b1, gelu, w2, &b2, scales).to(Device::CPU);
      EXPECT_EQ(std::memcmp(again.data(), want.data(), sizeof(float) * want.numel()), 0) << what << ": not repeatable";
      Tensor mine = op::nchw_to_nhwc(gpu, image);
      const void* at = mine.raw();
      const Tensor got = op::mlp_branch_(gpu, std::move(mine), norm, w1, &b1, gelu, w2, &b2, scales);
      EXPECT_EQ(got.raw(), at) << "the output was not written over the handed-over input";
      const Tensor host = got.to(Device::CPU);
      EXPECT_LE(rel_error(host, expected), bar) << what;
      EXPECT_LE(rel_error(want, expected), bar) << what;
      int64_t differ = 0;
      for (int64_t i = 0; i < host.numel(); ++i) differ += std::memcmp(host.data() + i, want.data() + i, 4) != 0;
      std::printf("%s: %lld of %lld elements differ in their bits from the new tensor's, rel. error %.2e\n",
                  what.c_str(), static_cast<long long>(differ), static_cast<long long>(host.numel()),
                  rel_error(host, want));
      // x is shared (this test holds it): a new output, x unchanged
      const Tensor before = x.to(Device::CPU);
      const Tensor shared = op::mlp_branch_(gpu, x, norm, w1, &b1, gelu, w2, &b2, scales);
      EXPECT_NE(shared.raw(), x.raw());
      const Tensor after = x.to(Device::CPU);
      EXPECT_EQ(std::memcmp(before.data(), after.data(), sizeof(float) * before.numel()), 0);
    }
  }
}

// PoolFormer's mixer half leaves its output's GroupNorm statistics with it (cuda::kGn1PartialsKey),
// and the MLP half's norm takes them instead of reading its input for them: the same bits as the
// norm's own pass, for a sample of two chunks, one of them partial, with and without the vector
// kernel (C = 12 is not a whole number of bf16 vectors). A write to the output drops them.
TEST(CudaBackend, PoolBranchStatisticsGiveTheNormsOwnBits) {
  MF_REQUIRE_GPU();
  for (const int64_t C : {24, 12}) {
    const Tensor image = random_tensor({3, C, 11, 13}, 21);  // a sample: 11 · 13 · C elements
    const Tensor gw = random_tensor({C}, 22, 0.5f, 1.5f), gb = random_tensor({C}, 23), ls = random_tensor({C}, 24);
    const Tensor nw = random_tensor({C}, 25, 0.5f, 1.5f), nb = random_tensor({C}, 26);
    for (const Precision p : {Precision::fp32, Precision::bf16}) {
      Exec gpu{&get_backend("cuda", p), nullptr};
      const BranchNorm norm{BranchNorm::Type::group_norm1, &gw, &gb, 1e-5f};
      const Tensor x = op::nchw_to_nhwc(gpu, image);
      const Tensor y = op::pool_branch(gpu, x, norm, 3, BranchScales{nullptr, &ls});
      EXPECT_TRUE(y.derived(cuda::kGn1PartialsKey) != nullptr) << precision_name(p) << " C=" << C;
      const Tensor taken = op::group_norm1(gpu, y, nw, &nb, 1e-6f).to(Device::CPU);
      EXPECT_TRUE(y.derived(cuda::kGn1PartialsKey) == nullptr) << "the statistics are used once";
      const Tensor own = op::group_norm1(gpu, y, nw, &nb, 1e-6f).to(Device::CPU);
      EXPECT_EQ(std::memcmp(taken.data(), own.data(), sizeof(float) * own.numel()), 0)
          << precision_name(p) << " C=" << C;
      // written in place after the branch: the statistics of the old values must not be used
      Tensor z = op::pool_branch(gpu, x, norm, 3, BranchScales{nullptr, &ls});
      op::activation_(gpu, z, Activation{ActKind::GELU});
      EXPECT_TRUE(z.derived(cuda::kGn1PartialsKey) == nullptr);
      const Tensor fresh = op::group_norm1(gpu, op::activation(gpu, y, Activation{ActKind::GELU}), nw, &nb, 1e-6f);
      const Tensor after = op::group_norm1(gpu, z, nw, &nb, 1e-6f);
      const Tensor a = after.to(Device::CPU), f = fresh.to(Device::CPU);
      EXPECT_EQ(std::memcmp(a.data(), f.data(), sizeof(float) * f.numel()), 0) << precision_name(p) << " C=" << C;
    }
  }
}

// The bf16 backward of a convolution over a host fp32 input (the stem over the training batch) reads
// the bf16 copy its forward cached with the input, and uploads nothing: an fp32 upload of its own
// cost poolformer_s12 9 % of its training speed (the 77 MB batch again each step; docs/cuda-log.md).
// Its weight and bias gradients are those of the same input handed over in bf16 on the GPU, bit for
// bit. The stem's geometry: K = 7 · 7 · 3 = 147 columns, padded to 152 in bf16.
TEST(CudaBackward, ConvWeightGradientReadsTheForwardsBf16CopyOfAHostInput) {
  MF_REQUIRE_GPU();
  Exec gpu{&get_backend("cuda", Precision::bf16), nullptr};
  Exec ref{&get_backend("ref"), nullptr};
  const Tensor image = random_tensor({2, 3, 20, 18}, 31);  // NCHW
  const Tensor w = random_tensor({16, 3, 7, 7}, 32), b = random_tensor({16}, 33);
  const ConvGeometry g{7, 7, 4, 4, 2, 2};
  const Tensor host_x = op::nchw_to_nhwc(ref, image);   // host fp32
  const Tensor gpu_x = op::nchw_to_nhwc(gpu, image);    // device bf16: the same values, rounded
  ASSERT_EQ(gpu_x.dtype(), DType::bf16);
  const Tensor y = op::conv2d(gpu, host_x, w, &b, g);
  const auto copy = host_x.derived(cuda::kBf16CopyKey);
  ASSERT_TRUE(copy) << "the bf16 forward cached no bf16 copy of its host input";
  EXPECT_FALSE(host_x.derived(cuda::kUploadKey)) << "the forward kept the input's fp32 upload";
  const Tensor dy = random_tensor(y.shape(), 34);  // host fp32, as the op harness passes it
  Tensor dw_host = Tensor::zeros(w.shape()), db_host = Tensor::zeros(b.shape());
  Tensor dw_dev = Tensor::zeros(w.shape()), db_dev = Tensor::zeros(b.shape());
  op::conv2d_backward(gpu, host_x, w, g, dy, false, &dw_host, &db_host);
  EXPECT_FALSE(host_x.derived(cuda::kUploadKey)) << "the backward uploaded the fp32 input again";
  EXPECT_EQ(host_x.derived(cuda::kBf16CopyKey), copy) << "the backward made a bf16 copy of its own";
  op::conv2d_backward(gpu, gpu_x, w, g, dy, false, &dw_dev, &db_dev);
  EXPECT_EQ(std::memcmp(dw_host.data(), dw_dev.data(), sizeof(float) * dw_dev.numel()), 0);
  EXPECT_EQ(std::memcmp(db_host.data(), db_dev.data(), sizeof(float) * db_dev.numel()), 0);
  // and both are the reference's, to the bf16 bar of the conv2d backward cases
  Tensor dw_ref = Tensor::zeros(w.shape()), db_ref = Tensor::zeros(b.shape());
  op::conv2d_backward(ref, host_x, w, g, dy, false, &dw_ref, &db_ref);
  EXPECT_LE(rel_error(dw_host, dw_ref), kBf16Tolerance);
  EXPECT_LE(rel_error(db_host, db_ref), kBf16Tolerance);
}

TEST(CudaBackend, OutOfMemoryIsAnErrorAndTheBackendStillWorks) {
  MF_REQUIRE_GPU();
  get_backend("cuda");
  EXPECT_THROW(Tensor::empty({int64_t{1} << 40}, Device::CUDA), Error);  // 4 TiB
  Tensor t = Tensor::full({1000}, 2.f).to(Device::CUDA);
  t.fill(3.f);
  EXPECT_EQ(t.to(Device::CPU).data()[999], 3.f);
}

TEST(CudaBackend, OutOfMemoryOnTheCommandLine) {
  MF_REQUIRE_GPU();
  // A limit keeps the test small (a real exhaustion, batch 100000, is run by tools/device/cuda_check.sh
  // and its in-process form by the test above): the same error path, one line and exit 1.
  setenv("METAFORMER_CUDA_MEMORY_LIMIT", "256M", 1);
  const CliResult r = run_cli({"bench", "--model", "poolformer_s12", "--backend", "cuda", "--batch", "64", "--runs",
                               "1", "--warmup", "0"});
  unsetenv("METAFORMER_CUDA_MEMORY_LIMIT");
  expect_clean_failure(r, "out of GPU memory");
}

const char* const kGoldenFamilies[] = {"poolformer", "poolformerv2", "convformer", "caformer",
                                       "identityformer", "randformer", "mambaout", "mambaout_rw",
                                       "mixer", "gmixer", "resmlp", "gmlp"};

// A golden model's logits on `backend` (brought to the host), and timm's.
std::pair<Tensor, Tensor> golden_logits(const std::string& family, Backend& backend) {
  const std::string dir = data_path("golden/" + family);
  MetaFormer model(load_config(dir + "/config.json"));
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  SafeTensors io = SafeTensors::open(dir + "/io.safetensors");
  Ctx ctx;
  ctx.exec.backend = &backend;
  model.check_backend(backend);
  return {model.forward_nchw(ctx, io.load("input")).to(Device::CPU), io.load("logits")};
}

TEST(CudaBackend, GoldenModelsMatchTimm) {
  MF_REQUIRE_GPU();
  for (const char* family : kGoldenFamilies) {
    const auto [logits, expected] = golden_logits(family, get_backend("cuda"));
    EXPECT_LE(rel_error(logits, expected), 2e-5) << family;  // the CPU backends' golden bar (tests/test_golden.cpp)
  }
}

// verify over every golden folder: the models the cuda backend can run are checked against timm, and
// one that needs an op the backend does not offer (CAS-ViT's batch_norm with
// METAFORMER_CUDA_FAMILY_OPS=0) is a "not run" row, not the end of the table.
TEST(CudaBackend, VerifyRunsEveryGoldenItCanAndNamesTheOthers) {
  MF_REQUIRE_GPU();
  std::vector<std::string> args{"verify", "--backend", "cuda", "--tolerance", "2e-5"};
  for (const auto& e : std::filesystem::directory_iterator(data_path("golden")))
    if (e.is_directory()) args.push_back(e.path().string());
  std::sort(args.begin() + 5, args.end());
  const CliResult r = run_cli(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| golden_caformer |"), std::string::npos) << r.out;
  if (get_backend("cuda").supports(OpKind::BatchNorm)) {
    EXPECT_EQ(r.out.find("not run"), std::string::npos) << r.out;
    return;
  }
  EXPECT_NE(r.out.find("not run: model casvit_golden needs op batch_norm"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("not run on backend cuda"), std::string::npos) << r.err;
}

// bf16 storage keeps timm's top-1 on every golden input, within the bf16 bar of docs/tolerances.md.
TEST(CudaBackend, GoldenModelsKeepTimmsTop1InBf16) {
  MF_REQUIRE_GPU();
  for (const char* family : kGoldenFamilies) {
    const auto [logits, expected] = golden_logits(family, get_backend("cuda", Precision::bf16));
    EXPECT_LE(rel_error(logits, expected), kBf16Tolerance * 5) << family;  // the golden bf16 bar, 5e-2
    const int64_t B = expected.dim(0), K = expected.dim(1);
    for (int64_t b = 0; b < B; ++b) {
      const float* g = logits.data() + b * K;
      const float* e = expected.data() + b * K;
      // On a mismatch, how far apart timm's two best logits are: a near tie is below what bf16 resolves.
      std::vector<float> sorted(e, e + K);
      std::partial_sort(sorted.begin(), sorted.begin() + std::min<int64_t>(2, K), sorted.end(), std::greater<>());
      const double margin = K > 1 ? (sorted[0] - sorted[1]) / std::max(std::abs(sorted[0]), 1e-30f) : 1.0;
      EXPECT_EQ(std::max_element(g, g + K) - g, std::max_element(e, e + K) - e)
          << family << " sample " << b << ": timm's two best logits are " << margin << " apart (relative)";
    }
  }
}

// augment_crops on the GPU (data/device_crops.h, src/ops/cuda/kernels/augment.cu) against the CPU
// backend, on loader batches of the RGB fixtures: packed rows (224: every box fits) and rows the
// workers finished (16: none fits). fp32 must be the same bits; bf16 the CPU values rounded to bf16
// (round to nearest even, as every upload of fp32 images in bf16 mode rounds them).
TEST(CudaAugment, ImagesAreTheCpuTransformsBitForBit) {
  MF_REQUIRE_GPU();
  TempDir dir;
  for (const char* cls : {"a", "b"})
    for (const char* f : {"photo.jpg", "photo_progressive.jpg", "photo_444.jpg", "photo.png"}) {
      std::filesystem::create_directories(dir.file(cls));
      write_bytes(dir.file(std::string(cls) + "/" + f), read_bytes(data_path(std::string("image/") + f)));
    }
  for (int size : {224, 16}) {
    DataTransform t;
    t.size = size;
    const auto data = open_image_folder(dir.path(), t);
    const std::vector<float> tv = data->byte_normalisation();
    Tensor table = Tensor::empty({3, 256});
    std::copy(tv.begin(), tv.end(), table.data());
    LoaderOptions o;
    o.batch = 8;
    o.seed = 11;
    o.workers = 2;
    o.packed_crops = true;
    DataLoader loader(*data, o);
    auto batch = loader.next();
    ASSERT_TRUE(batch.has_value());
    Exec cpu{&get_backend("cpu"), nullptr};
    const Tensor want = op::augment_crops(cpu, batch->images, batch->crop_headers, table);
    for (Precision p : {Precision::fp32, Precision::bf16}) {
      Exec gpu{&get_backend("cuda", p), nullptr};
      const Tensor got = op::augment_crops(gpu, batch->images, batch->crop_headers, table).to(Device::CPU);
      ASSERT_EQ(got.shape(), want.shape());
      int64_t differ = 0;
      for (int64_t i = 0; i < want.numel(); ++i) {
        const float w = p == Precision::fp32 ? want.data()[i] : bf16_bits_to_float(float_to_bf16_bits(want.data()[i]));
        differ += std::memcmp(&w, got.data() + i, sizeof w) != 0;
      }
      EXPECT_EQ(differ, 0) << "size " << size << (p == Precision::fp32 ? " fp32" : " bf16") << ", of " << want.numel();
      // keep_fp32 (Mixup follows and rounds once): the fp32 values whatever the activations' dtype
      const Tensor wide = op::augment_crops(gpu, batch->images, batch->crop_headers, table, true).to(Device::CPU);
      ASSERT_EQ(wide.dtype(), DType::f32);
      EXPECT_EQ(std::memcmp(wide.data(), want.data(), sizeof(float) * want.numel()), 0) << "size " << size << " keep_fp32";
    }
  }
}

// mix_images on the GPU (Mixup and CutMix by the backend, data/batch_mix.h) against the host's
// mix_images_into: fp32 the same bits, bf16 the host's fp32 result rounded once; from a host batch
// (the loader's images) and from augment_crops's fp32 output on the device.
TEST(CudaAugment, MixedImagesAreTheHostsBitForBit) {
  MF_REQUIRE_GPU();
  const Tensor x = random_tensor({6, 20, 24, 3}, 5);
  std::vector<MixPlan> plans(3);
  plans[1].mode = MixPlan::Mode::blend, plans[1].keep = 0.3173f, plans[1].take = 0.6827f;
  plans[2].mode = MixPlan::Mode::box, plans[2].y0 = 3, plans[2].y1 = 17, plans[2].x0 = 0, plans[2].x1 = 11;
  for (const MixPlan& plan : plans) {
    Tensor want = Tensor::empty(x.shape());
    mix_images_into(x.data(), 6, 20, 24, 3, plan, want.data());
    for (Precision p : {Precision::fp32, Precision::bf16}) {
      Exec gpu{&get_backend("cuda", p), nullptr};
      for (bool on_device : {false, true}) {
        const Tensor got = op::mix_images(gpu, on_device ? x.to(Device::CUDA) : x, plan).to(Device::CPU);
        ASSERT_EQ(got.shape(), want.shape());
        int64_t differ = 0;
        for (int64_t i = 0; i < want.numel(); ++i) {
          const float w = p == Precision::fp32 ? want.data()[i] : bf16_bits_to_float(float_to_bf16_bits(want.data()[i]));
          differ += std::memcmp(&w, got.data() + i, sizeof w) != 0;
        }
        EXPECT_EQ(differ, 0) << "mode " << static_cast<int>(plan.mode) << (p == Precision::fp32 ? " fp32" : " bf16")
                             << (on_device ? ", device input" : ", host input");
      }
    }
  }
}

// graphs.cpp: a pass that cannot be recorded (here it copies through the host, which the pool refuses
// while a graph is being captured) runs eagerly from then on, gives the same result every call and
// leaves no error behind for the next kernel; a pass that can be recorded gives the eager result
// from its replays. The third call is the one that records.
TEST(CudaBackend, PassThatCannotBeRecordedRunsWithoutAGraph) {
  MF_REQUIRE_GPU();
  Backend& be = get_backend("cuda");
  const Tensor host = random_tensor({4, 8, 8, 16}, 3);
  const Tensor x = host.to(Device::CUDA);
  const auto doubled = [&](const Tensor& in) {
    Tensor y = in.clone();
    std::vector<Tensor*> ts{&y};
    be.scale_(ts, 2.0);
    return y;
  };
  const auto through_host = [&](const Tensor& in) { return doubled(doubled(in).to(Device::CPU).to(Device::CUDA)); };
  int owner_a = 0, owner_b = 0;
  for (int call = 1; call <= 5; ++call) {
    const Tensor a = be.run_pass(&owner_a, x, through_host).to(Device::CPU);
    const Tensor b = be.run_pass(&owner_b, x, doubled).to(Device::CPU);
    for (int64_t i = 0; i < host.numel(); ++i) {
      ASSERT_EQ(a.data()[i], 4.f * host.data()[i]) << "call " << call << ", element " << i;
      ASSERT_EQ(b.data()[i], 2.f * host.data()[i]) << "call " << call << ", element " << i;
    }
  }
  be.release_passes(&owner_a);
  be.release_passes(&owner_b);
  be.synchronize();
}

// Only determinism: that the steady state needs no new cudaMallocAsync from the pool is not checked here
// (the pool statistics live behind CUDA headers this file does not include).
TEST(CudaBackend, RepeatedRunsGiveIdenticalLogits) {
  MF_REQUIRE_GPU();
  MetaFormer model(zoo_config("poolformer_s12"));
  initialize_parameters(model, 1);
  Ctx ctx;
  ctx.exec.backend = &get_backend("cuda");
  const Tensor x = random_tensor({2, 224, 224, 3}, 5);
  const Tensor first = model.run(ctx, x).to(Device::CPU);
  const Tensor second = model.run(ctx, x).to(Device::CPU);
  EXPECT_EQ(max_abs_diff(first, second), 0.0) << "the same input gave different logits";
}

}  // namespace
}  // namespace mf::test
