// The cross-backend op cases (in the spirit of ggml's test-backend-ops): every op on awkward shapes
// (7×7 maps, odd channel counts, batches of 1 and 3), each with its documented tolerance
// (docs/tolerances.md). The same cases drive the correctness tests (tests/test_ops.cpp: each backend
// against the reference backend) and the timing tool (test-backend-ops --mode perf).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ops/ops.h"

namespace mf::test {

struct OpCase {
  std::string name;  // "linear/3x7x7x37->53+bias"
  OpKind op;
  double tolerance;  // on ||y - ref|| / ||ref||; also max |y - ref| <= 10 · tolerance · max |ref|
  // Builds the inputs from `seed` (identically on every call) and runs the op on `e`.
  std::function<Tensor(const Exec& e, uint64_t seed)> run;
};

const std::vector<OpCase>& op_cases();

}  // namespace mf::test
