// metaformer verify: checks this build against reference outputs produced by timm.
//
// Each DIR holds weights.safetensors, io.safetensors ("input" NCHW, "logits", and optionally "stem"
// and "stages.N" in NCHW as timm returns them) and either config.json or model.txt (a zoo name).
// tools/golden/make_golden.py and tools/golden/full_parity.py write such folders.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <map>

#include "cli/common.h"
#include "core/error.h"
#include "core/threading.h"
#include "io/safetensors.h"
#include "model/loader.h"
#include "model/zoo.h"

namespace mf::cli {

namespace {

double rel_error(const Tensor& a, const Tensor& ref) {
  MF_CHECK(a.numel() == ref.numel(), "output has {} values, reference {}", a.numel(), ref.numel());
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = static_cast<double>(a.data()[i]) - ref.data()[i];
    num += d * d;
    den += static_cast<double>(ref.data()[i]) * ref.data()[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Rows of `a` whose largest entry is where `ref`'s is, out of all rows.
std::pair<int64_t, int64_t> top1_agreement(const Tensor& a, const Tensor& ref) {
  const int64_t rows = ref.dim(0), cols = ref.numel() / rows;
  int64_t same = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = a.data() + r * cols;
    const float* y = ref.data() + r * cols;
    same += std::max_element(x, x + cols) - x == std::max_element(y, y + cols) - y;
  }
  return {same, rows};
}

MetaFormerConfig config_in(const std::string& dir) {
  namespace fs = std::filesystem;
  if (fs::exists(dir + "/config.json")) return load_config(dir + "/config.json");
  std::ifstream f(dir + "/model.txt");
  MF_CHECK(f.good(), "{}: needs config.json or model.txt", dir);
  std::string name;
  f >> name;
  return zoo_config(name);
}

}  // namespace

void register_verify(CLI::App& app) {
  struct Args {
    std::vector<std::string> dirs;
    std::string backend = "cpu", dtype = "fp32", device;
    int threads = 0;
    double tolerance = 1e-4;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("verify", "check this build against reference outputs from timm (golden folders)");
  sub->add_option("dirs", args->dirs, "golden folders (weights.safetensors, io.safetensors, config.json | model.txt)")
      ->required();
  sub->add_option("--backend", args->backend, "cpu, ref or cuda")->capture_default_str();
  sub->add_option("--device", args->device, "cuda or cuda:N with --backend cuda");
  sub->add_option("--threads,-t", args->threads, "threads (default: all cores)");
  sub->add_option("--dtype", args->dtype, "precision of the matrix products: fp32 or bf16 (bf16 needs a looser "
                  "--tolerance; docs/bf16.md)")->capture_default_str();
  sub->add_option("--tolerance", args->tolerance, "largest accepted ||y - ref|| / ||ref|| of the logits")
      ->capture_default_str();
  sub->callback([args] {
    set_num_threads(args->threads);
    select_device(args->device, args->backend);
    Backend& backend = get_backend(args->backend, parse_precision(args->dtype));
    // Every folder is checked before the table starts, so that a wrong path is one line on stderr
    // rather than a table header followed by an error.
    std::vector<MetaFormerConfig> configs;
    for (const auto& dir : args->dirs) {
      MF_CHECK(std::filesystem::is_directory(dir), "{}: no such folder", dir);
      configs.push_back(config_in(dir));
      for (const char* file : {"weights.safetensors", "io.safetensors"})
        MF_CHECK(std::filesystem::exists(dir + "/" + file), "{}: {} is missing", dir, file);
    }
    fmt::print("| model | input | logits rel. error | top-1 agrees | worst intermediate (rel. error) | result |\n");
    fmt::print("|---|---|---:|---:|---|---|\n");
    int failures = 0;
    std::vector<std::string> skipped;
    for (size_t i = 0; i < args->dirs.size(); ++i) {
      const std::string& dir = args->dirs[i];
      MetaFormer model(configs[i]);
      // A model the backend cannot run yet (an op without a kernel there) is a row of its own, and the
      // other folders are still checked; it is neither a pass nor a difference from timm.
      try {
        model.check_backend(backend);
      } catch (const Error& e) {
        fmt::print("| {} | - | - | - | - | not run: {} |\n", model.config().name, e.what());
        skipped.push_back(model.config().name);
        continue;
      }
      load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
      SafeTensors io = SafeTensors::open(dir + "/io.safetensors");
      std::map<std::string, Tensor> seen;
      Ctx ctx;
      ctx.exec.backend = &backend;
      ctx.on_output = [&](const std::string& name, const Tensor& t) {
        if (io.contains(name)) seen[name] = t.device() == Device::CPU ? t.clone() : t.to(Device::CPU);
      };
      const Tensor input = io.load("input");
      Tensor logits = model.forward_nchw(ctx, input).to(Device::CPU);
      const Tensor ref_logits = io.load("logits");
      const double err = rel_error(logits, ref_logits);
      const auto [same, rows] = top1_agreement(logits, ref_logits);
      std::string worst = "-";
      double worst_err = -1;
      Exec ref{&get_backend("ref"), nullptr};
      for (auto& [name, t] : seen) {
        const double e = rel_error(t, op::nchw_to_nhwc(ref, io.load(name)));
        if (e > worst_err) {
          worst_err = e;
          worst = fmt::format("{} ({:.2e})", name, e);
        }
      }
      const bool ok = err <= args->tolerance;
      failures += !ok;
      fmt::print("| {} | {} | {:.2e} | {}/{} | {} | {} |\n", model.config().name, input.shape().str(), err, same, rows,
                 worst, ok ? "ok" : "FAIL");
    }
    if (!skipped.empty())
      fmt::print(stderr, "note: {} of {} models not run on backend {} (an op without a kernel there): {}\n",
                 skipped.size(), args->dirs.size(), args->backend, fmt::join(skipped, ", "));
    MF_CHECK(failures == 0, "{} of {} models differ from timm by more than {:g}", failures,
             args->dirs.size() - skipped.size(), args->tolerance);
    MF_CHECK(skipped.size() < args->dirs.size(), "no model could run on backend {}", args->backend);
  });
}

}  // namespace mf::cli
