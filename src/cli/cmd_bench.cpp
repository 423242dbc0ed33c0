// metaformer bench: latency and throughput of random-weight models, as a markdown table.
//
// Each (model, batch) point runs in a child process, so that its peak resident memory (getrusage)
// is its own and one model's buffers never warm the caches or allocator of the next. Each point:
// warm-up passes, then timed passes; the table gives the median latency with its min-max spread,
// images/s from the median, GFLOP/s (2 FLOPs per MAC), and the peak RSS of the process.
//
// `--config` times a JSON model description (a new mixer, say) as the other commands take it.
// `--weights` and `--input` time given weights on a given batch (bench/side_by_side.py gives the
// engine and its peers the same ones); `--json` also writes the points for scripts, one object per
// point with a name on every field (with --profile, "ops" lists each op's calls, time and MACs);
// `--gemm` measures the machine's GEMM ceiling through oneDNN, the library the engine's GEMMs run on.
// `--lengths` times a sequence model at several sequence lengths (its nominal one otherwise): how a
// mixer's cost grows with L (docs/sequences.md's cost table).
#include <fmt/format.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/common.h"
#include "core/error.h"
#include "core/threading.h"
#include "io/file.h"
#include "io/npy.h"
#include "ops/gemm_peak.h"
#include "ops/ops.h"

namespace mf::cli {

namespace {

struct Point {
  std::string model;
  int batch = 1;
  int64_t length = 0;  // a sequence model's timed length (0: its nominal sequence.length)
  double median_ms = 0, min_ms = 0, max_ms = 0, gmacs_per_image = 0, peak_rss_mb = 0;
  double peak_gpu_mb = 0;  // the GPU memory pool's peak (cuda backend), weights included
  int runs = 0;
  OpProfile profile;
};

// The process's peak resident memory: VmHWM, which belongs to the process's own address space
// (getrusage's ru_maxrss survives exec, so it could report a large parent's size instead).
double peak_rss_mb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

// Runs in the child process.
// The timed batch: the first `batch` images of --input (NCHW .npy, as `run` takes), channels-last,
// or a constant image when no input is given.
Tensor bench_input(const std::string& input, int batch, int res, int chans, const Exec& exec) {
  if (input.empty()) return Tensor::full({batch, res, res, chans}, 0.5f);
  Tensor all = read_npy(input);
  MF_CHECK(all.ndim() == 4 && all.dim(1) == chans, "--input {}: expected [B, {}, H, W], got {}", input, chans,
           all.shape().str());
  MF_CHECK(all.dim(0) >= batch, "--input {} holds {} images; batch {} needs more", input, all.dim(0), batch);
  Tensor x = Tensor::from({batch, all.dim(1), all.dim(2), all.dim(3)},
                          {all.data(), static_cast<size_t>(batch * all.dim(1) * all.dim(2) * all.dim(3))});
  return op::nchw_to_nhwc(exec, x);
}

Point measure(const ModelArgs& base, const std::string& model, const std::string& input, int batch, int resolution,
              int64_t length, int warmup, int runs, bool profile) {
  ModelArgs a = base;
  if (a.config.empty()) a.model = model;  // with --config, the description is the file's
  LoadedModel lm = load_model(a);
  const auto& c = lm.model->config();
  const int res = resolution > 0 ? resolution : c.input.size;
  Ctx ctx = lm.ctx();
  const bool gpu = lm.backend->device() == Device::CUDA;
  if (gpu) reset_gpu_peak();
  // A sequence model's nominal input: sequence.length steps of zeros (id 0 for tokens).
  MF_CHECK(length == 0 || c.is_sequence(), "--lengths: {} is not a sequence model", c.name);
  Tensor x = c.is_sequence() && input.empty()
                 ? Tensor::zeros({batch, 1, length > 0 ? length : c.sequence.length, c.in_chans})
                 : bench_input(input, batch, res, c.in_chans, ctx.exec);
  // Whole passes through the backend's recorder (CUDA graphs); the profiled pass below is not recorded.
  const auto pass = [&](const Tensor& in) { return lm.model->run(ctx, in); };
  for (int i = 0; i < warmup; ++i) lm.backend->run_pass(lm.model.get(), x, pass);
  lm.backend->synchronize();  // a GPU runs asynchronously: every timed pass ends with a wait

  Point p;
  p.model = model.empty() ? c.name : model;
  p.batch = batch;
  p.length = length;
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    lm.backend->run_pass(lm.model.get(), x, pass);
    lm.backend->synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  p.runs = runs;
  p.median_ms = ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  p.min_ms = ms.front();
  p.max_ms = ms.back();
  // The GPU's peak over the timed passes (weights included), as the side-by-side benchmark reads
  // torch's: not the extra profiled pass below, which runs outside the recorded graph and uploads
  // the input again beside the graph's copy of it.
  if (gpu) p.peak_gpu_mb = static_cast<double>(gpu_peak_bytes()) / (1 << 20);
  if (const std::string blocks = gpu ? gpu_peak_blocks() : std::string(); !blocks.empty())
    std::fprintf(stderr, "metaformer: peak GPU memory of %s at batch %d: %s\n", p.model.c_str(), batch, blocks.c_str());
  // MACs (and, with --profile, time per op) from one extra profiled pass.
  ctx.exec.profile = &p.profile;
  lm.model->run(ctx, x);
  p.gmacs_per_image = static_cast<double>(p.profile.total_macs()) / 1e9 / batch;
  if (!profile) p.profile.clear();
  p.peak_rss_mb = peak_rss_mb();
  return p;
}

nlohmann::json to_json(const Point& p) {
  nlohmann::json j{{"model", p.model},   {"batch", p.batch},   {"length", p.length}, {"median_ms", p.median_ms},
                   {"min_ms", p.min_ms}, {"max_ms", p.max_ms}, {"gmacs", p.gmacs_per_image},
                   {"rss", p.peak_rss_mb}, {"gpu", p.peak_gpu_mb}, {"runs", p.runs}};
  j["seconds"] = p.profile.seconds;
  j["calls"] = p.profile.calls;
  j["macs"] = p.profile.macs;
  return j;
}

Point from_json(const nlohmann::json& j) {
  Point p;
  p.model = j["model"];
  p.batch = j["batch"];
  p.length = j["length"];
  p.median_ms = j["median_ms"];
  p.min_ms = j["min_ms"];
  p.max_ms = j["max_ms"];
  p.gmacs_per_image = j["gmacs"];
  p.peak_rss_mb = j["rss"];
  p.peak_gpu_mb = j["gpu"];
  p.runs = j["runs"];
  p.profile.seconds = j["seconds"];
  p.profile.calls = j["calls"];
  p.profile.macs = j["macs"];
  return p;
}

// What --json writes for one point: every value under a name that says what it is and in which
// unit, so that scripts need no knowledge of positions (the wire format above is internal).
nlohmann::json labelled_json(const Point& p, int threads, const ModelArgs& m, int resolution, int warmup,
                             bool profiled) {
  nlohmann::json j{{"model", p.model},
                   {"batch", p.batch},
                   {"length", p.length},  // 0: the model's nominal sequence length (or an image model)
                   {"threads", threads},
                   {"backend", m.backend},
                   {"dtype", m.dtype},
                   {"resolution", resolution},  // 0: the model's own input size
                   {"weights", m.weights.empty() ? "random" : m.weights},
                   {"warmup_runs", warmup},
                   {"timed_runs", p.runs},
                   {"median_ms", p.median_ms},
                   {"min_ms", p.min_ms},
                   {"max_ms", p.max_ms},
                   {"images_per_s", 1000.0 * p.batch / p.median_ms},
                   {"gmacs_per_image", p.gmacs_per_image},
                   {"gflops_per_s", 2.0 * p.gmacs_per_image * p.batch / (p.median_ms / 1000.0)},
                   {"peak_rss_mb", p.peak_rss_mb}};
  if (m.backend == "cuda") j["peak_gpu_mb"] = p.peak_gpu_mb;
  // Per op, from the one profiled pass (with --profile only: without it the child keeps no profile).
  if (profiled) {
    nlohmann::json ops = nlohmann::json::array();
    for (int k = 0; k < static_cast<int>(OpKind::kCount); ++k) {
      const auto i = static_cast<size_t>(k);
      if (p.profile.calls[i] == 0) continue;
      ops.push_back({{"op", op_name(OpKind(k))},
                     {"family", op_family_name(op_family(OpKind(k)))},
                     {"calls", p.profile.calls[i]},
                     {"ms", p.profile.seconds[i] * 1e3},
                     {"gmacs", static_cast<double>(p.profile.macs[i]) / 1e9}});
    }
    j["ops"] = ops;
  }
  return j;
}

// Forks, measures in the child, and reads its result back through a pipe.
Point measure_in_child(const ModelArgs& base, const std::string& model, const std::string& input, int batch,
                       int resolution, int64_t length, int warmup, int runs, bool profile) {
  int fds[2];
  MF_CHECK(pipe(fds) == 0, "pipe failed: {}", std::strerror(errno));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  MF_CHECK(pid >= 0, "fork failed: {}", std::strerror(errno));
  if (pid == 0) {
    // The worker dies with bench, however bench dies (SIGTERM, SIGINT, SIGKILL): otherwise it would
    // go on measuring at full CPU for every remaining run. The getppid check covers a parent that
    // died before the death signal was armed.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    close(fds[0]);
    std::string msg;
    int code = 0;
    try {
      msg = to_json(measure(base, model, input, batch, resolution, length, warmup, runs, profile)).dump();
    } catch (const std::exception& e) {
      msg = nlohmann::json{{"error", e.what()}}.dump();
      code = 1;
    }
    for (size_t off = 0; off < msg.size();) {
      const ssize_t n = write(fds[1], msg.data() + off, msg.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    close(fds[1]);
    _exit(code);
  }
  close(fds[1]);
  std::string msg;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) msg.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  auto j = nlohmann::json::parse(msg, nullptr, false);
  MF_CHECK(!j.is_discarded(), "benchmark of {} at batch {} crashed (status {})", model, batch, status);
  if (j.contains("error")) throw Error(j["error"].get<std::string>());
  return from_json(j);
}

}  // namespace

void register_bench(CLI::App& app) {
  struct Args {
    ModelArgs model;
    std::string batches = "1,8", input, json, lengths;
    int resolution = 0, warmup = 3, runs = 10;
    bool profile = false, gemm = false;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("bench", "time random-weight models and print a markdown table");
  const auto [model, config] = add_model_choice(sub, args->model, "comma-separated zoo names");
  auto* weights = sub->add_option("--weights,-w", args->model.weights,
                                  "weights (.safetensors; default: random) for a single model");
  add_pretrained_option(sub, args->model, model, config, weights);
  sub->add_option("--input,-i", args->input, "timed images, NCHW float32 .npy (default: a constant image)");
  sub->add_option("--json", args->json, "also write the measurements to this JSON file");
  sub->add_flag("--gemm", args->gemm, "measure the GEMM ceiling (oneDNN, fp32 and bf16) instead of a model");
  sub->add_option("--batch,-b", args->batches, "comma-separated batch sizes")->capture_default_str();
  sub->add_option("--threads,-t", args->model.threads, "threads (default: all cores)");
  sub->add_option("--backend", args->model.backend, "cpu, ref or cuda")->capture_default_str();
  sub->add_option("--device", args->model.device, "cuda or cuda:N with --backend cuda");
  sub->add_option("--dtype", args->model.dtype, "fp32, or bf16 (matrix products on cpu, activations on cuda)")->capture_default_str();
  sub->add_option("--resolution,-r", args->resolution, "input size (default: the model's)")->check(CLI::Range(1, 4096));
  sub->add_option("--seed", args->model.seed, "seed of the random weights used without --weights")->capture_default_str();
  sub->add_option("--warmup", args->warmup, "untimed passes first")->capture_default_str()->check(CLI::Range(0, 100));
  sub->add_option("--runs", args->runs, "timed passes")->capture_default_str()->check(CLI::Range(1, 10000));
  sub->add_flag("--profile", args->profile, "also print the time spent per op family");
  sub->add_option("--lengths", args->lengths, "comma-separated sequence lengths (sequence models; default: the "
                  "model's sequence.length)");
  sub->callback([args] {
    const int threads = args->model.threads > 0 ? args->model.threads : static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
    if (args->gemm) {
      set_num_threads(threads);
      const auto peaks = measure_gemm_peak();
      fmt::print("| GEMM (oneDNN matmul) | M=N=K | threads | GFLOP/s |\n|---|---:|---:|---:|\n");
      for (auto& p : peaks)
        fmt::print("| {} | {} | {} | {:.1f} |\n", p.name, p.size ? std::to_string(p.size) : "-", threads, p.gflops);
      if (!args->json.empty()) {
        nlohmann::json j = nlohmann::json::array();
        for (auto& p : peaks) j.push_back({{"name", p.name}, {"size", p.size}, {"threads", threads}, {"gflops", p.gflops}});
        write_text(args->json, j.dump(2) + "\n");
      }
      return;
    }
    MF_CHECK(!args->model.model.empty() || !args->model.config.empty(),
             "bench: give --model NAMES or --config FILE (or --gemm)");
    // With --config there is one model, the file's; measure() takes its name from the description.
    const std::vector<std::string> models =
        args->model.config.empty() ? split_list(args->model.model, ',') : std::vector<std::string>{""};
    MF_CHECK(args->model.weights.empty() || models.size() == 1, "bench: --weights needs a single --model");
    MF_CHECK(!args->model.pretrained || models.size() == 1, "bench: --pretrained needs a single --model");
    if (args->model.pretrained) {
      args->model.weights = weights_file(args->model);  // downloaded here, once, not in each child
      args->model.pretrained = false;
    }
    if (!args->model.config.empty()) resolve_config(args->model);  // a bad file fails here, once, not in each child
    std::vector<int> batches;
    for (auto& b : split_list(args->batches, ',')) {
      int v = 0;
      try {
        v = std::stoi(b);
      } catch (const std::exception&) {
        fail("--batch: '{}' is not a number", b);
      }
      MF_CHECK(v >= 1 && v <= 4096, "--batch: {} is out of range [1, 4096]", v);
      batches.push_back(v);
    }
    std::vector<int64_t> lengths;
    for (auto& l : split_list(args->lengths, ',')) {
      int64_t v = 0;
      try {
        v = std::stoll(l);
      } catch (const std::exception&) {
        fail("--lengths: '{}' is not a number", l);
      }
      MF_CHECK(v >= 1 && v <= (int64_t{1} << 24), "--lengths: {} is out of range [1, 16777216]", v);
      lengths.push_back(v);
    }
    if (lengths.empty()) lengths.push_back(0);
    parse_precision(args->model.dtype);  // a bad name fails here, once, not in each child
    const bool gpu = args->model.backend == "cuda";
    std::vector<Point> points;
    for (auto& model : models)
      for (int b : batches)
        for (int64_t len : lengths) {
          Point p = measure_in_child(args->model, model, args->input, b, args->resolution, len, args->warmup, args->runs,
                                     args->profile);
          if (len > 0) p.model += fmt::format(" L={}", len);
          if (points.empty()) {  // after the first point: a model that cannot run prints its error line alone
            fmt::print("| model | batch | threads | backend | latency ms (median) | min-max ms | images/s | GMACs/img | "
                       "GFLOP/s | peak RSS MB |{}\n", gpu ? " peak GPU MB |" : "");
            fmt::print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|{}\n", gpu ? "---:|" : "");
          }
          fmt::print("| {} | {} | {} | {} | {:.2f} | {:.2f}-{:.2f} | {:.1f} | {:.3f} | {:.1f} | {:.0f} |{}\n", p.model,
                     p.batch, threads, args->model.dtype == "fp32" ? args->model.backend : args->model.backend + " " + args->model.dtype, p.median_ms, p.min_ms, p.max_ms,
                     1000.0 * p.batch / p.median_ms, p.gmacs_per_image,
                     2.0 * p.gmacs_per_image * p.batch / (p.median_ms / 1000.0), p.peak_rss_mb,
                     gpu ? fmt::format(" {:.0f} |", p.peak_gpu_mb) : "");
          std::fflush(stdout);
          points.push_back(std::move(p));
        }
    if (!args->json.empty()) {
      nlohmann::json j = nlohmann::json::array();
      for (auto& p : points)
        j.push_back(labelled_json(p, threads, args->model, args->resolution, args->warmup, args->profile));
      write_text(args->json, j.dump(2) + "\n");
    }
    if (!args->profile) return;
    fmt::print("\nTime per op family (one profiled pass, ms):\n\n| model | batch |");
    for (int f = 0; f < static_cast<int>(OpFamily::kCount); ++f) fmt::print(" {} |", op_family_name(OpFamily(f)));
    fmt::print("\n|---|---:|");
    for (int f = 0; f < static_cast<int>(OpFamily::kCount); ++f) fmt::print("---:|");
    fmt::print("\n");
    for (auto& p : points) {
      std::array<double, static_cast<size_t>(OpFamily::kCount)> fam{};
      for (int k = 0; k < static_cast<int>(OpKind::kCount); ++k)
        fam[static_cast<size_t>(op_family(OpKind(k)))] += p.profile.seconds[static_cast<size_t>(k)];
      fmt::print("| {} | {} |", p.model, p.batch);
      for (double s : fam) fmt::print(" {:.2f} |", s * 1e3);
      fmt::print("\n");
    }
  });
}

}  // namespace mf::cli
