// test-backend-ops: runs the op cases of op_cases.cpp outside GoogleTest.
//   --mode test  each case on --backend against the reference backend (as tests/test_ops.cpp does)
//   --mode grad  each backward on --backend against the reference backward (the cases whose op the
//                backend has a backward for: Backend::supports_backward; the others are skipped with
//                "no <backend> backward"), and the reference backward against finite differences;
//                then, on a CPU backend, every registered token mixer's backward against finite
//                differences (tests/mixer_cases.h), as "mixer/<name> ..."; on a device backend,
//                every mixer whose ops it has, trained there (parameters on the device) against
//                the reference backend
//   --each       grad mode: every gradient's error under its case (by default only a failing case's)
//   --mode perf  median time per case on --backend, with GFLOP/s for the ops that count MACs
//   --op NAME    only cases whose name contains NAME, or any of NAME,NAME2,... (a filter that matches no
//                case is an error)
//   --dtype bf16 the backend in bf16 precision (test mode: the matrix-product ops against the
//                bf16 bar of tests/test_ops.cpp, 1e-2, the others against their own tolerance; on a
//                backend that stores activations in bf16 (cuda), every op against 1e-2; grad mode
//                the same bars for the backward passes, op_cases.h grad_tolerance; a gradient the case
//                names a cancelling sum is judged against Σ|terms|, op_cases.h gradient_errors)
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/threading.h"
#include "mixer_cases.h"
#include "op_cases.h"
#include "test_util.h"

int main(int argc, char** argv) {
  CLI::App app{"test-backend-ops: test or time every op case on a backend"};
  std::string mode = "test", backend = "cpu", filter, dtype = "fp32";
  int reps = 20, threads = 0;
  bool each_gradient = false;
  app.add_option("--mode", mode, "test | grad | perf")->check(CLI::IsMember({"test", "grad", "perf"}));
  app.add_option("--backend,-b", backend, "backend under test")->capture_default_str();
  app.add_option("--op", filter, "only cases whose name contains this (or any of a comma-separated list)");
  app.add_option("--reps", reps, "timed repetitions in perf mode")->capture_default_str();
  app.add_option("--threads,-t", threads, "threads (default: all)");
  app.add_flag("--each", each_gradient, "grad mode: print every gradient's error, not only a failing case's");
  app.add_option("--dtype", dtype, "precision of the backend under test: fp32 or bf16")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  mf::set_num_threads(threads);
  try {
    mf::Exec ref{&mf::get_backend("ref"), nullptr};
    const mf::Precision precision = mf::parse_precision(dtype);
    mf::Exec under{&mf::get_backend(backend, precision), nullptr};
    int failures = 0, ran = 0, matched = 0;
    // --op a,b,c: a case is chosen when its name contains any of them.
    std::vector<std::string> wanted;
    for (size_t at = 0; !filter.empty() && at <= filter.size();) {
      const size_t comma = std::min(filter.find(',', at), filter.size());
      if (comma > at) wanted.push_back(filter.substr(at, comma - at));
      at = comma + 1;
    }
    if (!filter.empty() && wanted.empty()) throw std::runtime_error("--op '" + filter + "' names no case");
    const auto chosen = [&](const std::string& name) {
      if (wanted.empty()) return true;
      return std::any_of(wanted.begin(), wanted.end(), [&](const std::string& w) { return name.find(w) != std::string::npos; });
    };
    for (const auto& c : mf::test::op_cases()) {
      if (!chosen(c.name)) continue;
      ++matched;
      if (!under.backend->supports(c.op)) {
        fmt::print("  skip  {} (not supported on {})\n", c.name, backend);
        continue;
      }
      if (mode == "grad" && !c.backward) {
        fmt::print("  skip  {} (no backward)\n", c.name);
        continue;
      }
      if (mode == "grad" && !under.backend->supports_backward(c.op)) {
        fmt::print("  skip  {} (no {} backward)\n", c.name, backend);
        continue;
      }
      ++ran;
      if (mode == "grad") {
        const auto in = c.make_inputs(3);
        const mf::Tensor dy = mf::test::random_tensor(c.forward(ref, in).shape(), 77);
        const auto expected = c.backward(ref, in, dy);
        const auto got = c.backward(under, in, dy);
        double err = 0;
        std::string each;  // every gradient's error, printed for a failure: which input's gradient is off
        const auto errors = mf::test::gradient_errors(c, *under.backend, in, dy, got, expected);
        for (size_t i = 0; i < errors.size(); ++i)
          if (errors[i] >= 0) {
            err = std::max(err, errors[i]);
            each += fmt::format(" d{}={:.2e}", i, errors[i]);
            if (!c.term_magnitudes) continue;  // only a named cancelling sum can be judged otherwise
            const double plain = mf::test::rel_error(got[i].to(mf::Device::CPU), expected[i]);
            if (plain != errors[i]) each += fmt::format(" (of Σ|terms|; {:.2e} of the sum)", plain);
          }
        const double fd = mf::test::finite_difference_error(c, ref, 5);
        const double tol = mf::test::grad_tolerance(c, *under.backend);
        const bool ok = err <= tol && fd <= c.fd_tolerance;
        failures += !ok;
        fmt::print("  {}  {:<60} vs ref {:.2e} (tol {:.0e})  ref vs finite diff. {:.2e} (tol {:.0e})\n",
                   ok ? "ok  " : "FAIL", c.name, err, tol, fd, c.fd_tolerance);
        if (!ok || each_gradient) fmt::print("        by input (the case's input order):{}\n", each);
      } else if (mode == "test") {
        // Compared on the host: a GPU backend's output comes back first.
        const double err = mf::test::rel_error(c.run(under, 1).to(mf::Device::CPU), c.run(ref, 1));
        const double tol = mf::test::forward_tolerance(c, *under.backend);
        const bool ok = err <= tol;
        failures += !ok;
        fmt::print("  {}  {:<60} rel err {:.2e} (tol {:.0e})\n", ok ? "ok  " : "FAIL", c.name, err, tol);
      } else {
        mf::OpProfile profile;
        mf::Exec counted{under.backend, &profile};
        c.run(counted, 1);
        under.backend->synchronize();
        std::vector<double> ms;
        for (int r = 0; r < reps; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          c.run(under, 1);
          under.backend->synchronize();
          ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(ms.begin(), ms.end());
        const double med = ms[ms.size() / 2];
        const double gflops = 2.0 * static_cast<double>(profile.total_macs()) / (med * 1e6);
        fmt::print("  {:<60} {:9.3f} ms (includes input generation){}\n", c.name, med,
                   profile.total_macs() ? fmt::format("  {:8.1f} GFLOP/s", gflops) : "");
      }
    }
    if (mode == "grad" && under.backend->device() == mf::Device::CPU) {
      // Token mixers as modules: their backward passes compose the ops above, and a mixer without
      // one (or with a wrong one) shows here. The reference backend runs them; the cpu backend's
      // forward is compared with it.
      for (const auto& c : mf::test::mixer_cases()) {
        const std::string name = "mixer/" + c.label();
        if (!chosen(name)) continue;
        ++matched, ++ran;
        std::string problem;
        try {
          const mf::test::MixerGradientCheck r = mf::test::check_mixer_gradient(c);
          if (!r.gradient_ok()) problem = fmt::format("backward {:.6e} vs finite diff. {:.6e}", r.analytic, r.numeric);
          else if (r.cpu_vs_ref > 1e-5) problem = fmt::format("cpu forward vs ref {:.2e}", r.cpu_vs_ref);
        } catch (const std::exception& e) {
          problem = e.what();
        }
        failures += !problem.empty();
        fmt::print("  {}  {:<60} {}\n", problem.empty() ? "ok  " : "FAIL", name, problem.empty() ? "backward vs finite diff. ok" : problem);
      }
    }
    if (mode == "grad" && under.backend->device() != mf::Device::CPU) {
      // Token mixers as modules on a device, as a GPU run trains them: the parameters and their
      // gradients live there, so a mixer whose host code touches them (a weight rearranged on the
      // host) fails here, not in a user's run. Mixers with an op the backend lacks are skipped (the
      // trainer refuses them up front). Bar: 1e-4 relative; with bf16 activations 5e-2, the bar of a
      // whole model's logits in bf16, since a mixer compounds several ops' roundings, and the
      // one-element gradients (StarReLU's scalars: sums that cancel) reported, not judged
      // (docs/tolerances.md).
      const bool bf16_acts = under.backend->activation_dtype() == mf::DType::bf16;
      const double mixer_tol = bf16_acts ? 5e-2 : 1e-4;
      for (const auto& c : mf::test::mixer_cases()) {
        const std::string name = "mixer/" + c.label();
        if (!chosen(name)) continue;
        ++matched;
        std::string unsupported, problem, note;
        double err = 0;
        try {
          const auto r = mf::test::mixer_gradient_error_on(c, *under.backend, unsupported, !bf16_acts);
          if (!r) {
            fmt::print("  skip  {} ({} has no {} forward or backward)\n", name, unsupported, backend);
            continue;
          }
          err = r->worst;
          if (!r->scalar_name.empty())
            note = fmt::format("; scalar {} {:.2e} (not judged)", r->scalar_name, r->scalar_worst);
          if (!(err <= mixer_tol))
            problem = fmt::format("gradients vs ref {:.2e} (tol {:.0e}), worst: {}", err, mixer_tol, r->worst_name);
        } catch (const std::exception& e) {
          problem = e.what();
        }
        ++ran;
        failures += !problem.empty();
        fmt::print("  {}  {:<60} {}{}\n", problem.empty() ? "ok  " : "FAIL", name,
                   problem.empty() ? fmt::format("gradients vs ref {:.2e} (tol {:.0e})", err, mixer_tol) : problem,
                   note);
      }
    }
    if (matched == 0) {
      fmt::print(stderr, "test-backend-ops: error: no case name contains '{}' (--mode {})\n", filter, mode);
      return 1;
    }
    fmt::print("{} cases, {} failed\n", ran, failures);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "test-backend-ops: error: {}\n", e.what());
    return 1;
  }
}
