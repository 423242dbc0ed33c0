// Shared helpers for the tests: deterministic random tensors, error norms, temp dirs, running the CLI.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/module.h"

namespace mf::test {

// Uniform in [lo, hi), deterministic in `seed` (a small PCG, identical on every platform).
Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.f, float hi = 1.f);

// The derivative of a model's loss along a random direction in every trainable parameter (seeded),
// two ways: `analytic` from the gradients one backward pass leaves, `numeric` from central
// differences of two forward passes a step `eps` either side. loss(backward) runs the forward pass
// (and the backward pass when asked) and returns the loss; the parameters end as they started.
struct DirectionalDerivative {
  double analytic = 0, numeric = 0;
};
DirectionalDerivative directional_derivative(Module& model, const std::function<double(bool backward)>& loss,
                                             float eps);
// The same for the cross-entropy of model.run(ctx, x) against `targets` (soft labels), with ctx as the
// caller set it up (backend, training mode), at test_model_backward.cpp's step.
DirectionalDerivative cross_entropy_derivative(Module& model, Ctx& ctx, const Tensor& x, const Tensor& targets,
                                               float eps = 2.5e-4f);

// ||a - b|| / ||b|| (b is the reference); 0 when both are zero.
double rel_error(const Tensor& a, const Tensor& ref);
double max_abs_diff(const Tensor& a, const Tensor& b);

// A fresh directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CliResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built `metaformer` binary with the given arguments (no shell involved).
CliResult run_cli(const std::vector<std::string>& args);
// Runs `program` (a path) with the given arguments, as run_cli does.
CliResult run_program(const std::string& program, const std::vector<std::string>& args);

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> read_bytes(const std::string& path);

// The message of the mf::Error that `f` throws, or "(no error)" when it throws none (so that an
// expectation about the message fails, naming why).
std::string error_of(const std::function<void()>& f);

std::string data_path(const std::string& rel);  // tests/data/<rel>
std::string source_path(const std::string& rel);  // <repo>/<rel>

}  // namespace mf::test
