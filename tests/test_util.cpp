#include "test_util.h"

#include "core/error.h"
#include "ops/ops.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace mf::test {

namespace {
uint32_t pcg32(uint64_t& state) {
  const uint64_t old = state;
  state = old * 6364136223846793005ULL + 1442695040888963407ULL;
  const uint32_t xorshifted = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
  const uint32_t rot = static_cast<uint32_t>(old >> 59u);
  return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

}  // namespace

DirectionalDerivative cross_entropy_derivative(Module& model, Ctx& ctx, const Tensor& x, const Tensor& targets,
                                               float eps) {
  auto loss = [&](bool backward) {
    Tensor logits = model.run(ctx, x), dl;
    const double l = op::cross_entropy(ctx.exec, logits, targets, dl);
    if (backward) model.backward(ctx, dl);
    return l;
  };
  return directional_derivative(model, loss, eps);
}

DirectionalDerivative directional_derivative(Module& model, const std::function<double(bool backward)>& loss,
                                             float eps) {
  std::vector<Parameter*> params;
  for (auto& [name, p] : model.named_parameters()) {
    if (!p->trainable || p->buffer) continue;
    if (!p->grad.defined()) p->grad = Tensor::empty(p->value.shape());
    p->grad.zero();
    params.push_back(p);
  }
  loss(true);
  DirectionalDerivative d;
  std::vector<Tensor> dirs;
  for (size_t k = 0; k < params.size(); ++k) {
    dirs.push_back(random_tensor(params[k]->value.shape(), 100 + k));
    for (int64_t i = 0; i < params[k]->value.numel(); ++i)
      d.analytic += static_cast<double>(params[k]->grad.data()[i]) * dirs[k].data()[i];
  }
  auto shift = [&](float by) {
    for (size_t k = 0; k < params.size(); ++k) {
      for (int64_t i = 0; i < params[k]->value.numel(); ++i) params[k]->value.data()[i] += by * dirs[k].data()[i];
      params[k]->value.bump_version();
    }
  };
  shift(eps);
  const double up = loss(false);
  shift(-2 * eps);
  const double down = loss(false);
  shift(eps);
  d.numeric = (up - down) / (2 * static_cast<double>(eps));
  return d;
}

Tensor random_tensor(const Shape& shape, uint64_t seed, float lo, float hi) {
  Tensor t = Tensor::empty(shape);
  uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 1;
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float u = static_cast<float>(pcg32(state) >> 8) * (1.f / 16777216.f);
    p[i] = lo + (hi - lo) * u;
  }
  return t;
}

double rel_error(const Tensor& a, const Tensor& ref) {
  if (a.numel() != ref.numel()) throw std::runtime_error("rel_error: size mismatch");
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = static_cast<double>(a.data()[i]) - ref.data()[i];
    num += d * d;
    den += static_cast<double>(ref.data()[i]) * ref.data()[i];
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return std::sqrt(num / den);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.numel() != b.numel()) throw std::runtime_error("max_abs_diff: size mismatch");
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(static_cast<double>(a.data()[i]) - b.data()[i]));
  return m;
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "mf_test_XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

CliResult run_cli(const std::vector<std::string>& args) { return run_program(MF_CLI_PATH, args); }

CliResult run_program(const std::string& program, const std::vector<std::string>& args) {
  int out_pipe[2], err_pipe[2];
  if (pipe(out_pipe) || pipe(err_pipe)) throw std::runtime_error("pipe failed");
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    close(out_pipe[0]);
    close(err_pipe[0]);
    std::vector<char*> argv;
    std::string exe = program;
    argv.push_back(exe.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  CliResult r;
  // Drain both pipes together so that a chatty child never blocks on a full pipe.
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_fds = 2;
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::string data_path(const std::string& rel) { return std::string(MF_TEST_DATA_DIR) + "/" + rel; }
std::string source_path(const std::string& rel) { return std::string(MF_SOURCE_DIR) + "/" + rel; }

}  // namespace mf::test
