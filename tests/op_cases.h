// The cross-backend op cases (in the spirit of ggml's test-backend-ops): every op on awkward shapes
// (7×7 maps, odd channel counts, batches of 1 and 3), each with its documented tolerances
// (docs/tolerances.md). The same cases drive
//   tests/test_ops.cpp       each backend's forward and backward against the reference backend, and
//                            the reference backward against finite differences;
//   test-backend-ops         the same outside GoogleTest, plus timing (--mode test|grad|perf).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ops/ops.h"

namespace mf::test {

struct OpInput {
  Shape shape;
  float lo = -1.f, hi = 1.f;  // uniform range
  bool differentiable = true;  // checked against finite differences
};

struct OpCase {
  std::string name;  // "linear/[3, 7, 7, 37]->53+bias"
  OpKind op;
  double tolerance;  // forward: ||y - ref|| / ||ref||, and max |y - ref| <= 10 · tolerance · max |ref|
  std::vector<OpInput> inputs;
  std::function<Tensor(const Exec&, const std::vector<Tensor>&)> forward;
  // Gradients of <forward(inputs), dy> with respect to each input (undefined where not computed).
  std::function<std::vector<Tensor>(const Exec&, const std::vector<Tensor>&, const Tensor& dy)> backward;
  double grad_tolerance = 1e-5;  // backward of a backend against the reference backward
  double fd_tolerance = 1e-2;    // reference backward against central finite differences
  // For a gradient that is one sum of many terms which may cancel (StarReLU's scale and bias, whose
  // terms carry dy's random signs): Σ|terms| per gradient, 0 where a gradient is not such a sum,
  // computed on the reference backend. On a backend that stores activations in bf16, such a gradient
  // is judged by |got − ref| / Σ|terms| instead of |got − ref| / |ref|: each term's roundings bound
  // the error by a fraction of Σ|terms|, and a sum that cancels to 1/100 of it would otherwise be
  // held to a bar 100× tighter than its roundings allow (docs/tolerances.md). Unset: none.
  std::function<std::vector<double>(const Exec&, const std::vector<Tensor>&, const Tensor& dy)> term_magnitudes;

  std::vector<Tensor> make_inputs(uint64_t seed) const;
  Tensor run(const Exec& e, uint64_t seed) const { return forward(e, make_inputs(seed)); }
};

const std::vector<OpCase>& op_cases();
// The optimizer's ops (tests/optimizer_cases.cpp), part of op_cases().
void add_optimizer_cases(std::vector<OpCase>& v);

// The bar of a forward case on `backend` against the reference (docs/tolerances.md): the case's own
// tolerance in fp32; 1e-2 for the matrix products in bf16 precision (rounded operands); and 1e-2 for
// every op on a backend that stores its activations in bf16 (cuda: inputs and output rounded to 8
// significant bits, ≤ 2⁻⁹ relative each).
double forward_tolerance(const OpCase& c, const Backend& backend);
constexpr double kBf16Tolerance = 1e-2;
// The bar of a backward case against the reference backward: the case's own in fp32, and the bf16
// bar where forward_tolerance uses it (the inputs, dy and the input gradients rounded to bf16 on a
// backend that stores activations in bf16; parameter gradients accumulate in fp32 there).
double grad_tolerance(const OpCase& c, const Backend& backend);
// Each gradient's error against the reference backward, judged against grad_tolerance: rel_error, or
// for a gradient the case names a cancelling sum (OpCase::term_magnitudes), on a backend that stores
// activations in bf16, |got − ref| / Σ|terms|. Negative where a gradient is not computed on one side.
// `got` may live on the device; `in` and `dy` are the inputs both backwards ran on.
std::vector<double> gradient_errors(const OpCase& c, const Backend& backend, const std::vector<Tensor>& in,
                                    const Tensor& dy, const std::vector<Tensor>& got,
                                    const std::vector<Tensor>& expected);

// Directional finite-difference check of `c.backward` on `e`: for each differentiable input i and a
// random direction d, compares (L(x + εd) - L(x - εd)) / 2ε with <grad_i, d>, where
// L = <forward(x), dy>. Returns the worst error relative to the typical size of <grad_i, d>.
double finite_difference_error(const OpCase& c, const Exec& e, uint64_t seed, std::string* worst_input = nullptr);

}  // namespace mf::test
