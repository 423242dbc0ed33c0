// Every op of every backend against the reference backend, on the cases of op_cases.cpp.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "op_cases.h"
#include "ops/backend.h"
#include "test_util.h"

namespace mf::test {
namespace {

class BackendOps : public ::testing::TestWithParam<size_t> {};

// bf16 precision: the matrix-product ops round their operands to bfloat16 (8 significant bits,
// relative rounding error up to 2^-9) and accumulate in fp32. On these cases, whose inputs are
// uniform in [-1, 1] and whose products sum up to a few hundred terms, that leaves a relative error of
// a few 1e-3 (measured ≤ 4e-3); the bar is 1e-2 (docs/tolerances.md). Every other op must be exactly
// as in fp32.

TEST_P(BackendOps, Bf16MatchesReference) {
  const OpCase& c = op_cases()[GetParam()];
  Exec ref{&get_backend("ref"), nullptr};
  Exec fp32{&get_backend("cpu"), nullptr};
  Exec bf16{&get_backend("cpu", Precision::bf16), nullptr};
  const bool rounds = c.op == OpKind::Linear || c.op == OpKind::Conv2d || c.op == OpKind::Attention;
  Tensor got = c.run(bf16, 1);
  if (rounds) {
    EXPECT_LE(rel_error(got, c.run(ref, 1)), kBf16Tolerance) << c.name;
  } else {
    EXPECT_EQ(max_abs_diff(got, c.run(fp32, 1)), 0.0) << c.name;
  }
}

TEST_P(BackendOps, MatchesReference) {
  const OpCase& c = op_cases()[GetParam()];
  Exec ref{&get_backend("ref"), nullptr};
  Exec cpu{&get_backend("cpu"), nullptr};
  for (uint64_t seed : {1u, 2u}) {
    Tensor expected = c.run(ref, seed);
    Tensor got = c.run(cpu, seed);
    ASSERT_EQ(got.shape(), expected.shape()) << c.name;
    double max_ref = 0;
    for (float v : expected.span()) max_ref = std::max(max_ref, static_cast<double>(std::fabs(v)));
    const double rel = rel_error(got, expected);
    EXPECT_LE(rel, c.tolerance) << c.name << " seed " << seed;
    EXPECT_LE(max_abs_diff(got, expected), 10 * c.tolerance * max_ref) << c.name << " seed " << seed;
  }
}

// Cases whose op has a backward pass (layout conversion at the model input has none).
std::vector<size_t> differentiable_cases() {
  std::vector<size_t> v;
  for (size_t i = 0; i < op_cases().size(); ++i)
    if (op_cases()[i].backward) v.push_back(i);
  return v;
}

class BackendGrads : public ::testing::TestWithParam<size_t> {};

// The backward of each backend against the reference backward, with the same cotangent.
TEST_P(BackendGrads, MatchReference) {
  const OpCase& c = op_cases()[GetParam()];
  Exec ref{&get_backend("ref"), nullptr};
  Exec cpu{&get_backend("cpu"), nullptr};
  const std::vector<Tensor> in = c.make_inputs(3);
  const Tensor dy = random_tensor(c.forward(ref, in).shape(), 77);
  const std::vector<Tensor> expected = c.backward(ref, in, dy);
  const std::vector<Tensor> got = c.backward(cpu, in, dy);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].defined(), expected[i].defined()) << c.name << " input " << i;
    if (!got[i].defined()) continue;
    EXPECT_LE(rel_error(got[i], expected[i]), c.grad_tolerance) << c.name << " gradient of input " << i;
  }
}

// A case that names cancelling sums (OpCase::term_magnitudes, judged against Σ|terms| in bf16 storage
// on a GPU) gives, for each of them, a one-element gradient and a Σ|terms| no smaller than the sum
// itself (triangle inequality), and above it: the terms carry both signs and cancel (7.7× and more on
// these cases). The CPU suite checks the magnitudes the GPU's bar divides by.
TEST(OpCases, CancellingSumsHaveTheirTermMagnitudes) {
  Exec ref{&get_backend("ref"), nullptr};
  int named = 0;
  for (const OpCase& c : op_cases()) {
    if (!c.term_magnitudes) continue;
    const std::vector<Tensor> in = c.make_inputs(3);
    const Tensor dy = random_tensor(c.forward(ref, in).shape(), 77);
    const std::vector<Tensor> grads = c.backward(ref, in, dy);
    const std::vector<double> m = c.term_magnitudes(ref, in, dy);
    ASSERT_EQ(m.size(), grads.size()) << c.name;
    for (size_t i = 0; i < m.size(); ++i) {
      if (m[i] == 0) continue;
      ++named;
      ASSERT_EQ(grads[i].numel(), 1) << c.name << " gradient " << i;
      const double sum = std::abs(static_cast<double>(grads[i].data()[0]));
      EXPECT_GE(m[i] * (1 + 1e-5), sum) << c.name << " gradient " << i;
      EXPECT_GT(m[i], 2 * sum) << c.name << " gradient " << i << ": its terms should cancel";
    }
  }
  EXPECT_GE(named, 8);  // StarReLU's two scalars in the four act_depthwise_train cases
}

// The reference backward against central finite differences of the reference forward.
TEST_P(BackendGrads, ReferenceMatchesFiniteDifferences) {
  const OpCase& c = op_cases()[GetParam()];
  Exec ref{&get_backend("ref"), nullptr};
  for (uint64_t seed : {5u, 6u}) {
    std::string detail;
    EXPECT_LE(finite_difference_error(c, ref, seed, &detail), c.fd_tolerance) << c.name << ": " << detail;
  }
}

std::string case_name(const ::testing::TestParamInfo<size_t>& info) {
  std::string s = op_cases()[info.param].name;
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s + "_" + std::to_string(info.param);
}

INSTANTIATE_TEST_SUITE_P(AllCases, BackendOps, ::testing::Range<size_t>(0, op_cases().size()), case_name);
INSTANTIATE_TEST_SUITE_P(AllCases, BackendGrads, ::testing::ValuesIn(differentiable_cases()), case_name);

// The reference backend itself against values worked out by hand.
TEST(ReferenceOps, PoolMinusInputDividesByInBoundsCells) {
  Exec ref{&get_backend("ref"), nullptr};
  // 2x2 map, one channel: every 3x3 window covers all four cells, divisor 4.
  Tensor x = Tensor::from({1, 2, 2, 1}, std::vector<float>{1, 2, 3, 4});
  Tensor y = op::pool_minus_input(ref, x, 3);
  EXPECT_FLOAT_EQ(y.data()[0], 2.5f - 1);
  EXPECT_FLOAT_EQ(y.data()[3], 2.5f - 4);
  // 3x1 map: the middle window has 3 cells, the ends 2.
  Tensor z = op::pool_minus_input(ref, Tensor::from({1, 3, 1, 1}, std::vector<float>{3, 6, 9}), 3);
  EXPECT_FLOAT_EQ(z.data()[0], 4.5f - 3);
  EXPECT_FLOAT_EQ(z.data()[1], 6.f - 6);
  EXPECT_FLOAT_EQ(z.data()[2], 7.5f - 9);
}

TEST(ReferenceOps, LayerNormAndActivationsByHand) {
  Exec ref{&get_backend("ref"), nullptr};
  Tensor x = Tensor::from({1, 2}, std::vector<float>{1, 3});
  Tensor y = op::layer_norm(ref, x, Tensor::from({2}, std::vector<float>{1, 2}), nullptr, 0.f);
  EXPECT_NEAR(y.data()[0], -1.f, 1e-6);
  EXPECT_NEAR(y.data()[1], 2.f, 1e-6);
  Tensor a = Tensor::from({3}, std::vector<float>{-1, 0.5f, 2});
  Tensor star = op::activation(ref, a, {ActKind::StarReLU, 2.f, -1.f});
  EXPECT_FLOAT_EQ(star.data()[0], -1.f);
  EXPECT_FLOAT_EQ(star.data()[1], 2.f * 0.25f - 1.f);
  EXPECT_FLOAT_EQ(star.data()[2], 7.f);
  Tensor gelu = op::activation(ref, a, {ActKind::GELU, 1, 0});
  EXPECT_NEAR(gelu.data()[2], 1.9544997361, 1e-6);  // 2·Φ(2)
  EXPECT_NEAR(gelu.data()[0], -0.1586552539, 1e-6);
}

TEST(ReferenceOps, AttentionWithOneKeyReturnsItsValue) {
  Exec ref{&get_backend("ref"), nullptr};
  // One token: softmax over one key is 1, so the output is v.
  Tensor qkv = Tensor::from({1, 1, 6}, std::vector<float>{0.3f, -2, 5, 1, 7, -4});
  Tensor y = op::attention(ref, qkv, 1, 2, 0.7f);
  EXPECT_FLOAT_EQ(y.data()[0], 7.f);
  EXPECT_FLOAT_EQ(y.data()[1], -4.f);
}

// test-backend-ops --mode grad runs a case's backward on a backend only where supports_backward says
// so: the CPU backends say it for every op they support, so that check skips nothing on the CPU.
TEST(OpDispatcher, CpuBackendsHaveTheBackwardOfEveryOpTheySupport) {
  for (const char* name : {"ref", "cpu"}) {
    const Backend& b = get_backend(name);
    for (int k = 0; k < static_cast<int>(OpKind::kCount); ++k) {
      const auto op = static_cast<OpKind>(k);
      EXPECT_EQ(b.supports_backward(op), b.supports(op)) << name << ": " << op_name(op);
    }
  }
}

TEST(OpDispatcher, RejectsMismatchedShapes) {
  Exec cpu{&get_backend("cpu"), nullptr};
  EXPECT_THROW(op::linear(cpu, Tensor::zeros({2, 5}), Tensor::zeros({3, 4}), nullptr), Error);
  EXPECT_THROW(op::conv2d(cpu, Tensor::zeros({1, 5, 5, 3}), Tensor::zeros({4, 2, 3, 3}), nullptr, {3, 3, 1, 1, 1, 1}),
               Error);
  EXPECT_THROW(op::attention(cpu, Tensor::zeros({1, 4, 10}), 2, 2, 1.f), Error);
  EXPECT_THROW(op::layer_norm(cpu, Tensor::zeros({2, 5}), Tensor::zeros({4}), nullptr, 1e-6f), Error);
  EXPECT_THROW(get_backend("tpu"), Error);
}

TEST(OpDispatcher, ProfileCountsMacs) {
  OpProfile p;
  Exec cpu{&get_backend("cpu"), &p};
  op::linear(cpu, Tensor::zeros({3, 4}), Tensor::zeros({5, 4}), nullptr);
  EXPECT_EQ(p.macs[static_cast<size_t>(OpKind::Linear)], 3 * 4 * 5);
  EXPECT_EQ(p.calls[static_cast<size_t>(OpKind::Linear)], 1);
}

}  // namespace
}  // namespace mf::test
