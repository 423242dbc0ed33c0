// metaformer compare: the MetaFormer experiment as one command. Trains the same MetaFormer with only
// the token mixer changed (identical data order, schedule and augmentation for a given seed),
// evaluates each run, counts parameters and MACs, times inference on this machine, and writes
// OUT/report.md (table, budget, ranking), OUT/results.json (every number) and three plots
// (compare_report.cpp). Every run is its own run folder OUT/runs/<mixer>/seed<k>. Before anything is
// trained, every candidate model is built once and every existing run folder is checked: a finished
// run (result.json) is reused, and an interrupted one resumed from its last checkpoint, only when it
// was trained with this request's settings (run_settings.cpp); otherwise the command stops naming
// the difference, or with --force retrains just that run.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "cli/common.h"
#include "cli/compare_report.h"
#include "cli/run_settings.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threading.h"
#include "data/loader.h"
#include "io/file.h"
#include "model/metaformer.h"
#include "ops/backend.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/trainer.h"

namespace mf::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Where inference is timed: --timing-backend cpu (default) or cuda, --timing-dtype, --device.
struct Timing {
  std::string backend = "cpu", dtype = "fp32", device;
  std::string label() const { return backend + " " + dtype; }
};

// Inference cost of a description on this machine: MACs per image, batch-1 latency (median of
// `runs1`) and batch-8 throughput (median of `runs8`), random weights (the cost does not depend on them),
// on the timing backend (a GPU is waited for after every pass; whole passes go through the backend's
// recorder, as in bench). "timing" names the backend and dtype.
json measure_inference(const MetaFormerConfig& config, int runs1, int runs8, const Timing& timing) {
  MetaFormer model(config);
  initialize_parameters(model, 0);
  Ctx ctx;
  ctx.exec.backend = &get_backend(timing.backend, parse_precision(timing.dtype));
  Backend& backend = *ctx.exec.backend;
  model.check_backend(backend);
  const auto pass = [&](const Tensor& in) { return model.run(ctx, in); };
  // The recordings die with the model (the next mixer's model may live at the same address).
  struct Release {
    Backend& b;
    const void* owner;
    ~Release() {
      try {
        b.release_passes(owner);
      } catch (...) {  // a destructor must not throw; the next GPU call reports the device's error
      }
    }
  } release{backend, &model};
  const int s = config.input.size;
  // Images: a constant image at the nominal size; sequences: sequence.length steps of zeros (id 0).
  auto input = [&](int batch) {
    return config.is_sequence() ? Tensor::zeros({batch, 1, config.sequence.length, config.in_chans})
                                : Tensor::full({batch, s, s, config.in_chans}, 0.5f);
  };
  auto time_batch = [&](int batch, int runs) {
    Tensor x = input(batch);
    for (int i = 0; i < 3; ++i) backend.run_pass(&model, x, pass);  // 3: a CUDA graph is decided by then
    backend.synchronize();
    std::vector<double> ms;
    for (int i = 0; i < runs; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      backend.run_pass(&model, x, pass);
      backend.synchronize();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return median(ms);
  };
  OpProfile profile;
  ctx.exec.profile = &profile;
  model.run(ctx, input(1));
  ctx.exec.profile = nullptr;
  const double latency = time_batch(1, runs1);
  const double batch8 = time_batch(8, runs8);
  return {{"params", model.num_parameters()},
          {"macs", profile.total_macs()},
          {"latency_ms", latency},
          {"images_per_s", 8000.0 / batch8},
          {"timing", timing.label()}};
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> rows;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

struct Candidate {
  std::string label;              // as given: "pooling" or "sepconv+sepconv+attention"
  std::vector<MixerSpec> mixers;  // one per stage
};

Candidate parse_candidate(const std::string& text, size_t stages) {
  Candidate c{text, {}};
  auto names = split_list(text, '+');
  MF_CHECK(names.size() == 1 || names.size() == stages,
           "--mixers: '{}' names {} mixers; give one (for every stage) or one per stage ({}), joined by '+'", text,
           names.size(), stages);
  for (size_t s = 0; s < stages; ++s) c.mixers.push_back({names[names.size() == 1 ? 0 : s], json::object()});
  return c;
}

struct CompareArgs {
  ModelArgs base;
  std::string mixers, data, out;
  int seeds = 2;
  int runs1 = 20, runs8 = 5;
  Timing timing;
  bool no_progress = false;
  bool remeasure = false;
  bool force = false;
  TrainOptions o;
};

// The command that reproduces the comparison, for report.md: every option that changes a run.
std::string command_line(const CompareArgs& a, const TrainOptions& o) {
  const TrainOptions defaults;
  std::string command = "metaformer compare";
  command += a.base.config.empty() ? " --model " + a.base.model : " --base " + a.base.config;
  command += fmt::format(" --mixers {} --data {} --epochs {} --batch {} --lr {} --seeds {}", a.mixers, a.data,
                         o.epochs, o.batch, o.lr, a.seeds);
  if (o.warmup_epochs != defaults.warmup_epochs) command += fmt::format(" --warmup-epochs {}", o.warmup_epochs);
  if (o.weight_decay != defaults.weight_decay) command += fmt::format(" --weight-decay {}", o.weight_decay);
  if (o.drop_path >= 0) command += fmt::format(" --drop-path {}", o.drop_path);
  if (o.subset) command += fmt::format(" --subset {}", o.subset);
  if (o.eval_subset) command += fmt::format(" --eval-subset {}", o.eval_subset);
  if (o.max_steps) command += fmt::format(" --max-steps {}", o.max_steps);
  if (o.threads) command += fmt::format(" --threads {}", o.threads);
  if (o.backend != "cpu") command += fmt::format(" --backend {}", o.backend);
  if (o.matmul != "fp32") command += fmt::format(" --matmul {}", o.matmul);
  if (o.dtype != "fp32") command += fmt::format(" --dtype {}", o.dtype);
  if (a.timing.backend != o.backend || a.timing.dtype != "fp32")
    command += fmt::format(" --timing-backend {} --timing-dtype {}", a.timing.backend, a.timing.dtype);
  command += " --out " + a.out;
  return command;
}

// One training forward and backward of a candidate on the first two training samples, its
// parameters initialised and placed as a run places them (on the GPU for --backend cuda), then the
// backend's queue drained so that a kernel's failure shows here. A mixer that cannot train (an
// error in its backward pass, parameters read where they do not live) thus stops compare in seconds,
// before the candidates ahead of it have spent their hours.
void training_step_smoke(const MetaFormerConfig& config, Backend& backend, const Dataset& train) {
  MetaFormer model(config);
  initialize_parameters(model, 0);
  if (backend.device() != Device::CPU) move_parameters(model, backend.device());
  for (auto& [name, p] : model.named_parameters())
    if (p->trainable) p->grad = zeros_on(p->value.shape(), p->value.device());
  LoaderOptions lo;
  lo.batch = std::min<int64_t>(2, train.size());
  lo.train = false;
  lo.shuffle = false;
  lo.workers = 0;
  if (lo.batch < 1) return;
  DataLoader loader(train, lo);
  const auto batch = loader.next();
  if (!batch) return;
  Ctx ctx;
  ctx.exec.backend = &backend;
  ctx.training = true;
  Rng rng(0);
  ctx.rng = &rng;
  const Tensor logits = model.run(ctx, batch->images);
  Tensor dlogits = Tensor::full(logits.shape(), 1e-3f);
  model.backward(ctx, dlogits.to(logits.device()));
  backend.synchronize();
}

// Builds every candidate's model once, before anything is trained or written: a misspelt mixer, or
// an option or size a mixer rejects, then stops the command at once instead of after hours of
// training the candidates listed before it. Then checks that each trains on the backend: its ops
// (a GPU lacks some backward passes), and one training step (training_step_smoke).
void check_every_candidate_builds(const std::vector<Candidate>& candidates,
                                  const std::vector<MetaFormerConfig>& configs, Backend& training,
                                  const Dataset& train) {
  for (size_t c = 0; c < candidates.size(); ++c) {
    for (size_t d = 0; d < c; ++d)
      MF_CHECK(candidates[d].label != candidates[c].label, "--mixers names '{}' twice", candidates[c].label);
    std::unique_ptr<MetaFormer> model;
    try {
      configs[c].validate();
      model = std::make_unique<MetaFormer>(configs[c]);
    } catch (const std::exception& e) {
      fail("--mixers: '{}' cannot be built: {}", candidates[c].label, e.what());
    }
    try {  // every op trains on the backend (a GPU lacks some backward passes)
      model->check_backend(training);
      check_backward_ops(*model, training);
    } catch (const std::exception& e) {
      fail("--mixers: '{}': {}", candidates[c].label, e.what());
    }
    try {
      training_step_smoke(configs[c], training, train);
    } catch (const std::exception& e) {
      fail("--mixers: '{}' failed a training step on the {} backend: {}", candidates[c].label, training.name(),
           e.what());
    }
  }
}

// What `compare` does with one run folder, decided for all of them before any training starts.
struct PlannedRun {
  enum class Action { train, resume, reuse };
  Action action = Action::train;
  std::string dir;
  std::string retrain_reason;  // --force: why an existing run is trained again from scratch
};

std::string run_dir_of(const std::string& out, const Candidate& cand, int seed) {
  return fmt::format("{}/runs/{}/seed{}", out, cand.label, seed);
}

// A finished run (result.json) is reused, and an interrupted one (a checkpoint) resumed, only when
// the settings it was trained with equal this request's; otherwise the command stops naming the
// first difference, or with --force that run alone is trained again.
PlannedRun plan_run(const std::string& dir, const MetaFormerConfig& config, const TrainOptions& options, bool force) {
  PlannedRun p;
  p.dir = dir;
  const bool finished = fs::exists(dir + "/result.json");
  if (!finished && !latest_checkpoint(dir).has_value()) return p;  // nothing to keep: train
  std::string mismatch;
  if (const auto recorded = recorded_settings(dir); !recorded) {
    mismatch = fmt::format("{} has no readable record of its settings (config.json, train_args.json)", dir);
  } else if (const auto d = first_difference(*recorded, requested_settings(config, options))) {
    mismatch = fmt::format("{} was trained with {}={}, this request has {}={}", dir, d->key, d->recorded, d->key,
                           d->requested);
  }
  if (mismatch.empty()) {
    p.action = finished ? PlannedRun::Action::reuse : PlannedRun::Action::resume;
    return p;
  }
  MF_CHECK(force, "{}; use a new --out or --force to retrain", mismatch);
  p.retrain_reason = mismatch;
  return p;
}

void run_compare(const CompareArgs& a) {
  MF_CHECK(!a.base.model.empty() || !a.base.config.empty(), "give the base model: --base FILE or --model NAME");
  TrainOptions o = a.o;
  o.progress = !a.no_progress;
  o.data = a.data;
  if (o.threads > 0) set_num_threads(o.threads);
  // The training and timing backends are checked (a GPU that is not there, a bad --device) before
  // any training; both use --device.
  MF_CHECK(o.matmul == "fp32" || o.backend == "cuda", "--matmul {} applies to --backend cuda", o.matmul);
  MF_CHECK(o.dtype == "fp32" || o.backend == "cuda", "--dtype {} trains with bf16 activations on --backend cuda",
           o.dtype);
  select_device(a.timing.device, o.backend == "cuda" ? o.backend : a.timing.backend);
  Backend& training = get_backend(o.backend, parse_precision(o.dtype));
  get_backend(a.timing.backend, parse_precision(a.timing.dtype));
  const MetaFormerConfig base = resolve_config(a.base);
  // AFFNet's own network has no per-stage token mixers to swap (its AFF blocks are fixed).
  MF_CHECK(!base.is_affnet(), "compare swaps the token mixers of a MetaFormer, and {} is AFFNet's own network; "
           "use a MetaFormer base (the mixers aff and aff_bn are AFF with BatchNorm off and on)", base.name);
  std::vector<Candidate> candidates;
  for (const auto& text : split_list(a.mixers, ',')) candidates.push_back(parse_candidate(text, base.num_stages()));
  MF_CHECK(!candidates.empty(), "--mixers names no mixer");

  // The data fits the description (classes, channels, resolution) the same way for every mixer, so
  // it is opened once and every run reads the same (read-only) splits.
  MetaFormerConfig fitted = base;
  const DataSplits splits = open_data_for(a.data, fitted);
  std::vector<MetaFormerConfig> configs;
  for (const Candidate& cand : candidates) {
    MetaFormerConfig config = fitted;
    config.mixers = cand.mixers;
    config.name = base.name + "_" + cand.label;
    configs.push_back(config);
  }
  check_every_candidate_builds(candidates, configs, training, *splits.train);
  // Classifiers are ranked by test top-1, forecasters by test MSE (with the MAE beside it).
  const bool forecast = fitted.head.type == "forecast";
  const CompareMetric metric = forecast ? CompareMetric::forecast_mse() : CompareMetric::accuracy();
  auto options_for_seed = [&](int seed) {
    TrainOptions ro = o;
    ro.seed = static_cast<uint64_t>(seed);
    return ro;
  };
  std::vector<std::vector<PlannedRun>> plan(candidates.size());
  for (size_t c = 0; c < candidates.size(); ++c)
    for (int seed = 0; seed < a.seeds; ++seed)
      plan[c].push_back(plan_run(run_dir_of(a.out, candidates[c], seed), configs[c], options_for_seed(seed), a.force));

  fs::create_directories(a.out);
  std::vector<json> runs, per_mixer;
  for (size_t c = 0; c < candidates.size(); ++c) {
    const Candidate& cand = candidates[c];
    const MetaFormerConfig& config = configs[c];
    json cost;
    if (a.remeasure) cost = measure_inference(config, a.runs1, a.runs8, a.timing);
    bool retimed = a.remeasure;  // measured in this invocation: finished runs get the same cost
    std::vector<double> score, second, seconds;
    for (int seed = 0; seed < a.seeds; ++seed) {
      const PlannedRun& p = plan[c][static_cast<size_t>(seed)];
      const std::string result_path = p.dir + "/result.json";
      if (p.action != PlannedRun::Action::reuse) {
        const bool resume = p.action == PlannedRun::Action::resume;
        if (!p.retrain_reason.empty()) fmt::print("{}; retraining it (--force)\n", p.retrain_reason);
        fmt::print("== {} seed {}{}\n", cand.label, seed, resume ? " (resuming)" : "");
        if (!resume && fs::exists(p.dir)) fs::remove_all(p.dir);  // stale, or started with no checkpoint: redo
        const TrainSummary s = train(config, options_for_seed(seed), splits, p.dir, resume);
        if (cost.is_null()) {
          cost = measure_inference(config, a.runs1, a.runs8, a.timing);
          retimed = true;
        }
        json curve = json::array();
        for (auto& r : read_jsonl(p.dir + "/metrics.jsonl")) {
          json e{{"epoch", r["epoch"]}, {"train_loss", r["train_loss"]}};
          for (const char* k : {"top1", "mse", "mae"})
            if (r.contains(k)) e[k] = r[k];
          curve.push_back(e);
        }
        json result{{"mixer", cand.label}, {"seed", seed},         {"epochs", s.epochs_done},
                    {"steps", s.steps},    {"train_seconds", s.seconds}, {"curve", curve}};
        if (forecast) {
          result["mse"] = s.last_mse;
          result["mae"] = s.last_mae;
          result["best_mse"] = s.best_mse;
        } else {
          result["top1"] = 100.0 * s.last_top1;
          result["top5"] = 100.0 * s.last_top5;
          result["best_top1"] = 100.0 * s.best_top1;
        }
        for (auto& [k, v] : cost.items()) result[k] = v;
        write_text(result_path, result.dump(2) + "\n");
      } else {
        fmt::print("== {} seed {}: done earlier, skipped (same settings)\n", cand.label, seed);
      }
      const auto bytes = read_file(result_path);
      json r = json::parse(bytes.begin(), bytes.end());
      // A finished run timed on another backend (results before this option: the cpu) is timed again.
      if (cost.is_null() && r.value("timing", std::string("cpu fp32")) != a.timing.label()) {
        cost = measure_inference(config, a.runs1, a.runs8, a.timing);
        retimed = true;
      }
      if (retimed && p.action == PlannedRun::Action::reuse) {
        for (auto& [k, v] : cost.items()) r[k] = v;
        write_text(result_path, r.dump(2) + "\n");
      }
      if (cost.is_null()) cost = json{{"params", r["params"]}, {"macs", r["macs"]}, {"latency_ms", r["latency_ms"]},
                                      {"images_per_s", r["images_per_s"]},
                                      {"timing", r.value("timing", std::string("cpu fp32"))}};
      // A diverged forecaster's NaN MSE was written as null.
      const auto number = [&](const std::string& k) {
        MF_CHECK(r.contains(k), "{} has no '{}': it was trained for another task; use a new --out", result_path, k);
        return r[k].is_number() ? r[k].get<double>() : std::numeric_limits<double>::quiet_NaN();
      };
      score.push_back(number(metric.key));
      if (!metric.second_key.empty()) second.push_back(number(metric.second_key));
      seconds.push_back(r["train_seconds"].get<double>());
      runs.push_back(r);
    }
    double secs = 0;
    for (double t : seconds) secs += t;
    json m{{"mixer", cand.label},
           {"seeds", static_cast<int>(score.size())},
           {"train_seconds_mean", secs / static_cast<double>(seconds.size())}};
    // <key>, <key>_mean, _min, _max, _text: accuracies with 2 decimals (%), errors with 4.
    auto summarise = [&](const std::string& key, const std::vector<double>& v) {
      double mean = 0;
      for (double t : v) mean += t;
      m[key] = v;
      m[key + "_mean"] = mean / static_cast<double>(v.size());
      m[key + "_min"] = *std::min_element(v.begin(), v.end());
      m[key + "_max"] = *std::max_element(v.begin(), v.end());
      m[key + "_text"] = mean_pm(v, metric.digits);
    };
    summarise(metric.key, score);
    if (!metric.second_key.empty()) summarise(metric.second_key, second);
    for (auto& [k, v] : cost.items()) m[k] = v;
    per_mixer.push_back(m);
  }

  CompareBudget budget;
  budget.steps_min = budget.steps_max = runs.front()["steps"].get<int64_t>();
  for (const auto& r : runs) {
    budget.steps_min = std::min(budget.steps_min, r["steps"].get<int64_t>());
    budget.steps_max = std::max(budget.steps_max, r["steps"].get<int64_t>());
  }
  budget.epochs = o.epochs;
  budget.max_steps = o.max_steps;
  budget.batch = o.batch;
  budget.seeds = a.seeds;
  budget.train_images_available = splits.train->size();
  budget.train_images = o.subset > 0 ? std::min(o.subset, splits.train->size()) : splits.train->size();
  budget.eval_images_available = splits.eval->size();
  budget.eval_images = o.eval_subset > 0 ? std::min(o.eval_subset, splits.eval->size()) : splits.eval->size();
  if (forecast) {
    budget.metric = "MSE and MAE";
    budget.samples = "windows";
  } else if (fitted.is_sequence()) {
    budget.samples = "sequences";
  }
  write_compare_report(a.out, command_line(a, o), a.data, budget, per_mixer, runs, metric);
  fmt::print("\n{}\n", compare_table_text(budget, per_mixer, metric));
  fmt::print("wrote {0}/report.md, {0}/results.json, {0}/{1}_vs_macs.svg, {0}/{1}_vs_latency.svg, {0}/curves.svg\n",
             a.out, metric.file_stem);
}

}  // namespace

void register_compare(CLI::App& app) {
  auto a = std::make_shared<CompareArgs>();
  auto* sub = app.add_subcommand("compare", "train one MetaFormer per token mixer under identical settings and report");
  auto* base = sub->add_option("--base", a->base.config, "JSON model description (docs/config.md) whose mixers are swapped");
  auto* model = sub->add_option("--model,-m", a->base.model, "or a zoo model as the base");
  base->excludes(model);
  sub->add_option("--mixers", a->mixers, "mixers to compare, comma-separated; per stage joined by '+' "
                                          "(pooling,sepconv+sepconv+attention)")->required();
  sub->add_option("--data,-d", a->data, "fashion-mnist, long-range (synthetic), listops[-N] (sequences), co2, sunspots or csv:PATH (forecasting; ranked by test MSE), or a data folder")->required();
  sub->add_option("--out,-o", a->out, "output folder (report.md, results.json, plots, runs/)")->required();
  sub->add_option("--seeds", a->seeds, "seeds per mixer (0, 1, ...)")->capture_default_str()->check(CLI::Range(1, 100));
  TrainOptions& o = a->o;
  sub->add_option("--epochs,-e", o.epochs, "epochs per run")->capture_default_str()->check(CLI::Range(1, 100000));
  sub->add_option("--batch,-b", o.batch, "batch size")->capture_default_str()->check(CLI::Range(1, 65536));
  sub->add_option("--lr", o.lr, "peak learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--warmup-epochs", o.warmup_epochs, "linear warm-up length")->capture_default_str();
  sub->add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->capture_default_str();
  sub->add_option("--drop-path", o.drop_path, "stochastic depth rate (default: the base's)");
  sub->add_option("--subset", o.subset, "train on only this many samples (0: all)")->capture_default_str();
  sub->add_option("--eval-subset", o.eval_subset, "evaluate on only this many samples (0: all)")->capture_default_str();
  sub->add_option("--max-steps", o.max_steps, "stop each run after this many steps (0: all epochs)")->capture_default_str();
  sub->add_option("--threads,-t", o.threads, "compute threads (default: all cores)");
  sub->add_option("--workers", o.workers, "data-loading threads")->capture_default_str();
  sub->add_option("--latency-runs", a->runs1, "timed batch-1 passes per mixer")->capture_default_str();
  sub->add_option("--throughput-runs", a->runs8, "timed batch-8 passes per mixer")->capture_default_str();
  sub->add_option("--backend", o.backend, "backend every run trains on: cpu or cuda (docs/cuda.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_option("--matmul", o.matmul, "with --backend cuda: fp32 (exact), tf32 or bf16 matrix products")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "tf32", "bf16"}));
  sub->add_option("--dtype", o.dtype, "with --backend cuda: activations in fp32, or bf16 (autocast's mixed "
                  "precision; docs/cuda.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  auto* timing_backend =
      sub->add_option("--timing-backend", a->timing.backend,
                      "backend the latency and throughput are measured on: cpu or cuda (default: --backend)")
          ->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_option("--timing-dtype", a->timing.dtype, "fp32 or bf16 for the timing backend (docs/cuda.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  sub->add_option("--device", a->timing.device, "cuda:N with --backend or --timing-backend cuda (default cuda:0)");
  sub->add_flag("--no-progress", a->no_progress, "no progress bars");
  sub->add_flag("--remeasure", a->remeasure, "time inference again for finished runs too (e.g. on a quiet machine)");
  sub->add_flag("--force", a->force,
                "retrain the runs in OUT whose recorded settings differ from this request (matching runs are kept)");
  sub->callback([a, timing_backend] {
    if (timing_backend->count() == 0) a->timing.backend = a->o.backend;
    // Its trainings would each be split over the ranks while every rank wrote the report.
    if (distributed().world() > 1)
      throw CollectiveError("compare runs as one process, not under mpirun (train is data-parallel; "
                            "docs/distributed.md)");
    run_compare(*a);
  });
}

}  // namespace mf::cli
