// The token-mixer cases: every mixer in the registry (so a new mixer is checked with no test edit),
// with options that suit a small token grid where its defaults do not, plus variants of some. They
// drive tests/test_mixers.cpp and test-backend-ops --mode grad.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "mixers/mixer.h"
#include "ops/backend.h"

namespace mf::test {

struct MixerCase {
  std::string name;
  nlohmann::json options = nlohmann::json::object();
  int64_t dim = 16, height = 7, width = 7;
  std::string label() const;  // "gated_cnn {"conv_ratio":0.5} [2, 5, 6, 18]"
};

// GoogleTest prints a failing case's parameter with this instead of its bytes.
inline void PrintTo(const MixerCase& c, std::ostream* os) { *os << c.label(); }

// One case per registered mixer at least, in the registry's order.
std::vector<MixerCase> mixer_cases();

// The mixer of a case, its parameters random (scalar scales in [0.5, 1.5), the rest in [-0.5, 0.5))
// and their gradients allocated and zero.
std::unique_ptr<TokenMixer> make_mixer(const MixerCase& c);

struct MixerGradientCheck {
  double analytic = 0;    // <dL/d(input, params), direction> from backward() on the ref backend
  double numeric = 0;     // the same from central differences of the forward pass
  double cpu_vs_ref = 0;  // relative error of the cpu backend's forward against the ref backend's
  bool gradient_ok() const;  // |numeric - analytic| <= 1e-2 |analytic| (docs/tolerances.md)
};

// Runs the mixer forward in training mode and backward along a random direction in (input,
// trainable parameters), against central differences. Throws mf::Error when the mixer has no
// backward pass.
MixerGradientCheck check_mixer_gradient(const MixerCase& c);

// The mixer trained as a GPU run trains it: its parameters and gradients moved to `backend`'s
// device, one training forward and backward there, against the same on the reference backend.
struct MixerDeviceErrors {
  double worst = 0;         // the largest relative error (test_util.h rel_error) over the gradients judged
  std::string worst_name;   // "the input" or the parameter's name
  // Gradients of one element (StarReLU's scale and bias: sums over every element of an activation's
  // gradient) whose error is reported, not judged: with bf16 activations such a sum of rounded terms
  // is as ill-conditioned as the terms cancel (docs/tolerances.md); the op cases check their kernels.
  double scalar_worst = 0;
  std::string scalar_name;
};
// Judges the input gradient and every trainable parameter's gradient, or all but the one-element
// ones when `judge_scalars` is false. Nothing, with `unsupported` set to the first op that has no
// forward or backward on `backend` (the trainer refuses such a mixer up front).
std::optional<MixerDeviceErrors> mixer_gradient_error_on(const MixerCase& c, Backend& backend, std::string& unsupported,
                                                         bool judge_scalars = true);

}  // namespace mf::test
