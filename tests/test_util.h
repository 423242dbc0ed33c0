// Shared helpers for the tests: deterministic random tensors, error norms, temp dirs, running the CLI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mf::test {

// Uniform in [lo, hi), deterministic in `seed` (a small PCG, identical on every platform).
Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.f, float hi = 1.f);

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

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> read_bytes(const std::string& path);

std::string data_path(const std::string& rel);  // tests/data/<rel>
std::string source_path(const std::string& rel);  // <repo>/<rel>

}  // namespace mf::test
