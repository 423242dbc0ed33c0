#include "train/trainer.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "core/error.h"
#include "core/rng.h"
#include "core/threading.h"
#include "data/loader.h"
#include "io/file.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "report/svg_plot.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/ema.h"
#include "train/evaluate.h"
#include "train/forecast.h"
#include "train/grad_buckets.h"
#include "train/optimizer.h"
#include "train/run_lock.h"
#include "train/schedule.h"
#include "train/step_trace.h"

namespace mf {

namespace {
// A measurement switch (METAFORMER_STEP_TIMES, METAFORMER_PROFILE_HOST): on when set to 1.
bool env_is_one(const char* name) {
  const char* e = std::getenv(name);
  return e != nullptr && std::string(e) == "1";
}
}  // namespace

namespace fs = std::filesystem;
using nlohmann::json;

json TrainOptions::to_json() const {
  return json{{"epochs", epochs},
              {"batch", batch},
              {"lr", lr},
              {"min_lr", min_lr},
              {"warmup_lr", warmup_lr},
              {"warmup_epochs", warmup_epochs},
              {"weight_decay", weight_decay},
              {"label_smoothing", label_smoothing},
              {"drop_path", drop_path},
              {"clip_grad", clip_grad},
              {"mixup", mixup},
              {"cutmix", cutmix},
              {"mix_prob", mix_prob},
              {"mix_switch_prob", mix_switch_prob},
              {"ema_decay", ema_decay},
              {"seed", seed},
              {"workers", workers},
              {"subset", subset},
              {"eval_subset", eval_subset},
              {"eval_batch", eval_batch},
              {"max_steps", max_steps},
              {"keep_checkpoints", keep_checkpoints},
              {"backend", backend},
              {"matmul", matmul},
              {"dtype", dtype},
              {"allreduce", allreduce},
              {"bucket_mb", bucket_mb},
              {"threads", threads},
              {"data", data}};
}

TrainOptions TrainOptions::from_json(const json& j) {
  TrainOptions o;
  auto get = [&](const char* key, auto& field) {
    if (j.contains(key)) field = j.at(key).get<std::decay_t<decltype(field)>>();
  };
  try {
    get("epochs", o.epochs);
    get("batch", o.batch);
    get("lr", o.lr);
    get("min_lr", o.min_lr);
    get("warmup_lr", o.warmup_lr);
    get("warmup_epochs", o.warmup_epochs);
    get("weight_decay", o.weight_decay);
    get("label_smoothing", o.label_smoothing);
    get("drop_path", o.drop_path);
    get("clip_grad", o.clip_grad);
    get("mixup", o.mixup);
    get("cutmix", o.cutmix);
    get("mix_prob", o.mix_prob);
    get("mix_switch_prob", o.mix_switch_prob);
    get("ema_decay", o.ema_decay);
    get("seed", o.seed);
    get("workers", o.workers);
    get("subset", o.subset);
    get("eval_subset", o.eval_subset);
    get("eval_batch", o.eval_batch);
    get("max_steps", o.max_steps);
    get("keep_checkpoints", o.keep_checkpoints);
    get("backend", o.backend);
    get("matmul", o.matmul);
    get("dtype", o.dtype);
    get("allreduce", o.allreduce);
    get("bucket_mb", o.bucket_mb);
    get("threads", o.threads);
    get("data", o.data);
  } catch (const json::exception& e) {
    fail("training options: {}", e.what());
  }
  return o;
}

namespace {

uint64_t step_seed(uint64_t seed, int64_t step) {
  uint64_t s = seed ^ (static_cast<uint64_t>(step) * 0xD1B54A32D192ED03ULL) ^ 0x7A11ULL;
  return splitmix64(s);
}

// Each rank draws its own drop-path masks and Mixup/CutMix for its part of the global batch; rank 0
// draws what a single process draws (docs/distributed.md: with these, N ranks are not bit-identical
// to one process at N times the batch).
uint64_t rank_step_seed(uint64_t seed, int64_t step, int rank) {
  uint64_t s = step_seed(seed, step);
  if (rank == 0) return s;
  s ^= static_cast<uint64_t>(rank) * 0x9E3779B97F4A7C15ULL;
  return splitmix64(s);
}

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60)
                   : fmt::format("{}:{:02d}", s / 60, s % 60);
}

std::vector<json> read_metrics(const std::string& path) {
  std::vector<json> rows;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, false);
    if (!j.is_discarded()) rows.push_back(std::move(j));
  }
  return rows;
}

void write_curves(const std::string& run_dir, const std::vector<json>& rows, const std::string& title) {
  Series train_loss{"train loss (smoothed, augmented)", {}, {}, true, true, {}}, eval_loss{"test loss", {}, {}, true, true, {}};
  Series top1{"test top-1", {}, {}, true, true, {}}, ema1{"test top-1 (EMA)", {}, {}, true, true, {}};
  Series mse{"test MSE", {}, {}, true, true, {}}, mae{"test MAE", {}, {}, true, true, {}};
  // A diverged epoch's NaN loss is stored as null (JSON has no NaN): such points are left out.
  auto add = [](Series& s, const json& r, const char* key) {
    const auto it = r.find(key);
    if (it == r.end() || !it->is_number()) return;
    s.x.push_back(r.value("epoch", 0.0));
    s.y.push_back(it->get<double>());
  };
  for (const auto& r : rows) {
    add(train_loss, r, "train_loss");
    add(eval_loss, r, "eval_loss");
    add(top1, r, "top1");
    add(ema1, r, "ema_top1");
    add(mse, r, "mse");
    add(mae, r, "mae");
  }
  if (!mse.x.empty()) {  // a forecaster: its loss is the MSE, and the test errors take the second panel
    Plot loss{title + ": loss", "epoch", "mean squared error", {train_loss, eval_loss}, false, 600, 380};
    Plot err{title + ": test error", "epoch", "error (standardised units)", {mse, mae}, false, 600, 380};
    write_svg(run_dir + "/curves.svg", render_svg(std::vector<Plot>{loss, err}, 2));
    return;
  }
  Plot loss{title + ": loss", "epoch", "cross-entropy (nats)", {train_loss, eval_loss}, false, 600, 380};
  Plot acc{title + ": accuracy", "epoch", "test top-1 accuracy (%)", {top1}, false, 600, 380};
  if (!ema1.x.empty()) acc.series.push_back(ema1);
  write_svg(run_dir + "/curves.svg", render_svg(std::vector<Plot>{loss, acc}, 2));
}

// Fine-tuning: loads `path`, leaving a classifier of another size (and anything else under head.fc)
// as initialised, and summing an RGB stem over its input channels for a grey model (as timm does).
void load_initial_weights(MetaFormer& model, const std::string& path) {
  SafeTensors file = SafeTensors::open(path);
  LoadOptions lo;
  // The classifier: head.fc (MetaFormer, MambaOut) or head itself (isotropic models).
  lo.reinit_prefixes = {model.config().isotropic() ? "head." : "head.fc."};
  lo.adapt_input_channels = true;
  LoadResult r = load_weights(model, file, lo);
  fmt::print("loaded {} tensors from {}{}\n", r.loaded, path, r.renamed_from_original ? " (sail-sg naming)" : "");
  for (const auto& note : r.notes) fmt::print("  {}\n", note);
  for (const auto& name : r.skipped) fmt::print("  re-initialised {} (the checkpoint's does not fit)\n", name);
}

class Progress {
 public:
  Progress(bool enabled, int epoch, int epochs, int64_t steps) : enabled_(enabled), tty_(isatty(2)), epoch_(epoch),
        epochs_(epochs), steps_(steps), start_(std::chrono::steady_clock::now()) {}
  void update(int64_t done, double loss, double images_per_s, double eta_s) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    const bool last = done == steps_;
    if (tty_) {
      if (!last && now - last_print_ < std::chrono::milliseconds(200)) return;
    } else if (!last && done * 4 / std::max<int64_t>(steps_, 1) == printed_quarter_) {
      return;
    }
    last_print_ = now;
    printed_quarter_ = done * 4 / std::max<int64_t>(steps_, 1);
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(kWidth * done / std::max<int64_t>(steps_, 1));
    const std::string bar = std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(kWidth - filled), '.');
    fmt::print(stderr, "{}epoch {}/{} [{}] {}/{}  loss {:.4f}  {:.0f} img/s  ETA {}{}", tty_ ? "\r" : "", epoch_,
               epochs_, bar, done, steps_, loss, images_per_s, format_duration(eta_s), tty_ ? "\x1b[K" : "\n");
    if (tty_ && last) fmt::print(stderr, "\n");
  }

 private:
  bool enabled_, tty_;
  int epoch_, epochs_;
  int64_t steps_;
  std::chrono::steady_clock::time_point start_, last_print_{};
  int64_t printed_quarter_ = -1;
};

// Test hook: MF_DEBUG_KILL_AT_STEP=N kills the process with SIGKILL right after optimizer step N.
// With MF_DEBUG_KILL_RANK=R, only rank R of a data-parallel run dies.
void maybe_die_at_step(int64_t step) {
  static const char* v = std::getenv("MF_DEBUG_KILL_AT_STEP");
  static const char* rank = std::getenv("MF_DEBUG_KILL_RANK");
  if (v && std::atoll(v) == step && (!rank || std::atoi(rank) == distributed().rank())) std::raise(SIGKILL);
}

// Appends one line, with the reason on failure (an ofstream would only say that it failed).
void append_line(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot append to {}: {}", path, std::strerror(errno));
  const std::string text = line + "\n";
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      ::close(fd);
      fail("cannot append to {}: {}", path, std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) fail("cannot append to {}: {}", path, std::strerror(errno));
}

// The training options a resumed run must share with the run it continues: everything that decides
// which data is seen, in which order, and how the weights move. The others (epochs, max_steps,
// threads, workers, progress, profile, where the data lives, backend, matmul, dtype, allreduce,
// bucket_mb, eval_batch, keep_checkpoints) may change; docs/training.md lists them.
json fixed_options(const TrainOptions& o) {
  json j = o.to_json();
  for (const char* k : {"epochs", "max_steps", "threads", "workers", "data", "backend", "matmul", "dtype",
                        "allreduce", "bucket_mb", "eval_batch", "keep_checkpoints"})
    j.erase(k);
  return j;
}

// What a checkpoint records about its run, compared on resume: the model description and the fixed
// options, with a CRC-32 digest of each for a quick look.
json run_record(const MetaFormerConfig& config, const TrainOptions& o) {
  const json model = config_to_json(config), options = fixed_options(o);
  auto digest = [](const json& j) {
    const std::string d = j.dump();
    return fmt::format("{:08x}", crc32_of(std::vector<uint8_t>(d.begin(), d.end())));
  };
  return {{"model", model}, {"model_digest", digest(model)}, {"options", options}, {"options_digest", digest(options)}};
}

// A run's own files disagree with its checkpoint: no older checkpoint can fix that, so resume stops.
class RecordMismatch : public Error {
  using Error::Error;
};

struct ResumePoint {
  std::string dir;
  int epoch = 0;
  int64_t step = 0;
  double elapsed_seconds = 0;
  json metrics_row;  // the row of the checkpoint's epoch, as recorded in its manifest
};

// Loads checkpoint `dir` into the model, optimizer and EMA after checking that it is intact (the
// manifest's checksums), that it belongs to this run (description and fixed options), that every
// float it holds is finite and that its counters are in range. mf::Error names the first problem.
ResumePoint load_checkpoint(const std::string& dir, const std::string& run_dir, const json& record,
                            const TrainOptions& o, int64_t steps_per_epoch, MetaFormer& model, AdamW& opt,
                            ModelEma* ema) {
  ResumePoint p;
  p.dir = dir;
  const int folder_epoch = checkpoint_folder_epoch(dir);
  const std::optional<json> manifest = verify_checkpoint_files(dir);
  if (manifest) {
    MF_CHECK(manifest->value("epoch", -1) == folder_epoch, "{}/manifest.json names epoch {}", dir,
             manifest->value("epoch", -1));
    if (manifest->contains("record")) {
      const json& recorded = (*manifest)["record"];
      for (const char* part : {"model", "options"}) {
        if (!recorded.contains(part)) continue;
        const std::string d = first_json_difference(recorded[part], record[part]);
        if (!d.empty())
          throw RecordMismatch(fmt::format(
              "{}/{} differs from what checkpoint {} was written with: {}; restore it, or start a new run",
              run_dir, std::string(part) == "model" ? "config.json" : "train_args.json", dir, d));
      }
    }
    p.metrics_row = manifest->value("metrics_row", json());
  } else {
    fmt::print(stderr,
               "warning: checkpoint {} has no manifest.json (written by an older version): its files cannot be checked "
               "for damage; resuming with its values range-checked only\n",
               dir);
  }
  const SafeTensors weights = SafeTensors::open(dir + "/model.safetensors");
  check_all_finite(weights);
  const SafeTensors state = SafeTensors::open(dir + "/train_state.safetensors");
  check_all_finite(state);
  load_weights(model, weights);
  opt.load_state(state, "optimizer.");
  if (ema) {
    const SafeTensors averaged = SafeTensors::open(dir + "/model_ema.safetensors");
    check_all_finite(averaged);
    ema->load(averaged);
  }
  auto scalar = [&](const char* name) {
    const auto v = state.load_int(name);
    MF_CHECK(v.size() == 1, "{}: '{}' holds {} values, not 1", state.what(), name, v.size());
    return v[0];
  };
  const int64_t epoch = scalar("epoch"), step = scalar("step"), elapsed_ms = scalar("elapsed_ms"),
                seed = scalar("seed");
  MF_CHECK(epoch == folder_epoch, "{}: the state says epoch {}, the folder is epoch {}", state.what(), epoch,
           folder_epoch);
  MF_CHECK(epoch >= 1, "{}: epoch {} is out of range", state.what(), epoch);
  // An epoch ends after all its steps, or earlier only when --max-steps stopped the run in it.
  const int64_t first = (epoch - 1) * steps_per_epoch + 1, last = epoch * steps_per_epoch;
  MF_CHECK(step >= first && step <= last,
           "{}: step {} is outside epoch {}'s steps {} to {} ({} per epoch; is --data the run's data?)", state.what(),
           step, epoch, first, last, steps_per_epoch);
  MF_CHECK(opt.steps() == step, "{}: the optimizer has taken {} steps but the run {}", state.what(), opt.steps(), step);
  MF_CHECK(elapsed_ms >= 0, "{}: elapsed time {} ms is negative", state.what(), elapsed_ms);
  MF_CHECK(static_cast<uint64_t>(seed) == o.seed, "{}: the state's seed is {}, the run's is {}", state.what(),
           static_cast<uint64_t>(seed), o.seed);
  p.epoch = static_cast<int>(epoch);
  p.step = step;
  p.elapsed_seconds = static_cast<double>(elapsed_ms) / 1000.0;
  return p;
}

// The newest checkpoint of `run_dir` that passes load_checkpoint; a damaged newer one is named in
// one line. mf::Error when none is usable.
ResumePoint resume_point(const std::string& run_dir, const json& record, const TrainOptions& o,
                         int64_t steps_per_epoch, MetaFormer& model, AdamW& opt, ModelEma* ema) {
  const std::vector<std::string> candidates = checkpoint_candidates(run_dir);
  MF_CHECK(!candidates.empty(), "{}: no checkpoint to resume from", run_dir);
  std::string newest_problem;
  for (const std::string& dir : candidates) {
    try {
      ResumePoint p = load_checkpoint(dir, run_dir, record, o, steps_per_epoch, model, opt, ema);
      if (!newest_problem.empty())
        fmt::print(stderr, "checkpoint {} cannot be used ({}); resuming from the previous intact one, {}\n",
                   candidates.front(), newest_problem, dir);
      return p;
    } catch (const RecordMismatch&) {
      throw;
    } catch (const Error& e) {
      if (newest_problem.empty()) newest_problem = e.what();
    }
  }
  fail("{}: no intact checkpoint to resume from; the newest, {}, cannot be used: {}", run_dir, candidates.front(),
       newest_problem);
}

// Names every skipped file in RUN_DIR/skipped.txt, and says how many on stderr.
void log_skipped(const std::string& run_dir, const std::string& when, const std::vector<std::string>& messages) {
  if (messages.empty()) return;
  if (const Distributed& dist = distributed(); !dist.is_root()) {  // rank 0 alone writes in the run folder
    fmt::print(stderr, "rank {}: skipped {} unreadable file{} {} (first: {})\n", dist.rank(), messages.size(),
               messages.size() == 1 ? "" : "s", when, messages.front());
    return;
  }
  const std::string path = run_dir + "/skipped.txt";
  for (const auto& m : messages) append_line(path, when + ": " + m);
  fmt::print(stderr, "skipped {} unreadable file{} {} (first: {}); all are named in {}\n", messages.size(),
             messages.size() == 1 ? "" : "s", when, messages.front(), path);
}

}  // namespace

// The layout change of the input is never differentiated.
void check_backward_ops(const MetaFormer& model, const Backend& backend) {
  std::set<OpKind> ops;
  model.all_ops(ops);
  for (OpKind op : ops)
    MF_CHECK(op == OpKind::NchwToNhwc || backend.supports_backward(op),
             "model '{}' cannot train on the {} backend: {} has no backward pass there yet (train it on the cpu "
             "backend)", model.config().name, backend.name(), op_name(op));
}

TrainSummary train(MetaFormerConfig config, const TrainOptions& o, const DataSplits& data, const std::string& run_dir,
                   bool resume, const std::string& init_weights) {
  // A classifier trains with the cross-entropy on labelled data; a forecaster (head "forecast") with
  // the mean squared error on a forecasting task's windows (train/forecast.h).
  const bool forecast = config.head.type == "forecast";
  MF_CHECK(!forecast || data.train->horizon() > 0, "model '{}' forecasts (head 'forecast'), and {} is not a "
           "forecasting task (co2, sunspots, csv:PATH; docs/sequences.md)", config.name, data.train->describe());
  MF_CHECK(forecast || data.train->horizon() == 0, "model '{}' is a classifier, and {} is a forecasting task: give "
           "the model a \"forecast\" head (docs/sequences.md)", config.name, data.train->describe());
  MF_CHECK(o.epochs >= 1, "--epochs must be at least 1");
  MF_CHECK(o.batch >= 1, "--batch must be at least 1");
  MF_CHECK(std::isfinite(o.lr) && o.lr > 0, "--lr must be positive (it is {})", o.lr);
  MF_CHECK(std::isfinite(o.min_lr) && o.min_lr >= 0, "--min-lr must be zero or positive (it is {})", o.min_lr);
  MF_CHECK(std::isfinite(o.warmup_lr) && o.warmup_lr >= 0, "the warm-up learning rate must be zero or positive (it is {})",
           o.warmup_lr);
  MF_CHECK(std::isfinite(o.warmup_epochs) && o.warmup_epochs >= 0, "--warmup-epochs must be zero or positive (it is {})",
           o.warmup_epochs);
  set_num_threads(o.threads);
  // Data parallelism (docs/distributed.md): o.batch is the global batch, split over the ranks.
  const Distributed& dist = distributed();
  MF_CHECK(o.batch % dist.world() == 0, "the run's global batch of {} does not split evenly over {} ranks; use a "
           "number of ranks that divides it", o.batch, dist.world());
  MF_CHECK(o.dtype == "fp32" || o.dtype == "bf16", "--dtype is fp32 or bf16, not '{}'", o.dtype);
  MF_CHECK(o.dtype == "fp32" || o.backend == "cuda", "--dtype bf16 trains with bf16 activations on --backend cuda; "
           "the {} backend trains in fp32 (docs/cuda.md)", o.backend);
  Backend& backend = get_backend(o.backend, parse_precision(o.dtype));
  // METAFORMER_ALLREDUCE_ONE_RANK=1, a check for machines with one GPU (docs/distributed.md): a world of
  // one averages its gradients through the GPU path of data parallelism anyway (an NCCL communicator of
  // one rank; the buckets on their own stream, or the one call after the backward pass), so that the
  // path runs where no second GPU is. The mean over one rank is the rank's own gradients: an fp32 run
  // must end with the same bytes as without it.
  const bool reduce_alone =
      dist.world() == 1 && backend.device() != Device::CPU && env_is_one("METAFORMER_ALLREDUCE_ONE_RANK");
  const bool reduce_gradients = dist.world() > 1 || reduce_alone;
  MF_CHECK(!reduce_gradients || backend.device() == Device::CPU || backend.supports_allreduce(),
           "data-parallel training across ranks on the {} backend needs NCCL, and this build has none "
           "(docs/distributed.md)", backend.name());
  MF_CHECK(o.matmul == "fp32" || backend.name() == "cuda", "--matmul {} applies to --backend cuda (the {} backend "
           "multiplies in fp32; its bf16 mode is docs/bf16.md)", o.matmul, backend.name());
  set_gpu_matmul(o.matmul);
  MF_CHECK(o.allreduce == "fp32" || o.allreduce == "bf16", "--allreduce is fp32 or bf16, not '{}'", o.allreduce);
  if (o.drop_path >= 0) config.drop_path_rate = o.drop_path;
  if (forecast) {
    MF_CHECK(config.head.horizon == data.train->horizon(), "the model forecasts {} steps but {} has {}",
             config.head.horizon, data.train->describe(), data.train->horizon());
    MF_CHECK(config.sequence.length == data.train->sequence_length(), "the model reads {} steps but {} has {}",
             config.sequence.length, data.train->describe(), data.train->sequence_length());
    MF_CHECK(o.mixup == 0 && o.cutmix == 0, "mixup and cutmix mix class labels; a forecaster has none (drop --mixup "
             "and --cutmix)");
  } else {
    MF_CHECK(config.num_classes == data.train->num_classes(), "the model has {} classes but {} has {}",
             config.num_classes, data.train->describe(), data.train->num_classes());
  }
  MF_CHECK(config.in_chans == data.train->channels(), "the model takes {} input channels but {} has {}",
           config.in_chans, data.train->describe(), data.train->channels());

  if (!o.trace.empty()) {
    // A replay elsewhere sees the batches and the weights, not this run's random draws.
    MF_CHECK(!resume, "--trace records a run from its first step; it does not combine with --resume");
    MF_CHECK(!forecast && o.mixup == 0 && o.cutmix == 0 && config.drop_path_rate == 0,
             "--trace records batches and weights, not random draws inside a step: it needs --drop-path 0 and no "
             "mixup or cutmix, on a classifier");
    MF_CHECK(dist.world() == 1, "--trace records a run of one process");
  }

  MetaFormer model(config);
  model.check_backend(backend);
  check_backward_ops(model, backend);
  initialize_parameters(model, o.seed);
  // On a GPU the weights, their gradients, the optimizer's moments and the EMA live there for the
  // whole run: the optimizer updates them in place, and checkpoints take host copies.
  if (backend.device() != Device::CPU) move_parameters(model, backend.device());
  AdamW opt(model, {o.lr, 0.9, 0.999, 1e-8, o.weight_decay});
  std::unique_ptr<ModelEma> ema;
  if (o.ema_decay > 0) ema = std::make_unique<ModelEma>(model, o.ema_decay);

  LoaderOptions lo;
  lo.batch = o.batch / dist.world();
  lo.rank = dist.rank();
  lo.world = dist.world();
  lo.seed = o.seed;
  lo.workers = o.workers;
  lo.subset = o.subset;
  lo.pinned = backend.device() == Device::CUDA;  // the CUDA backend decides whether to give any
  const int64_t samples_used = static_cast<int64_t>(DataLoader::epoch_order(data.train->size(), lo).size());
  const int64_t steps_per_epoch = samples_used / o.batch;
  MF_CHECK(steps_per_epoch >= 1, "{} samples make no batch of {}", samples_used, o.batch);
  LrSchedule sched;
  sched.lr = o.lr;
  sched.min_lr = o.min_lr;
  sched.warmup_lr = o.warmup_lr;
  sched.warmup_steps = static_cast<int64_t>(o.warmup_epochs * static_cast<double>(steps_per_epoch));
  sched.total_steps = steps_per_epoch * o.epochs;
  const int64_t total_steps = o.max_steps > 0 ? std::min(o.max_steps, sched.total_steps) : sched.total_steps;

  // Taken before anything in the folder is written, held until train() returns; rank 0 alone
  // writes in the folder.
  std::optional<RunLock> lock;
  if (dist.is_root()) lock.emplace(run_dir);
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  const json record = run_record(config, o);
  // Ranks started differently would train different things, or wait for each other forever.
  dist.check_same("the model", record["model"].dump());
  dist.check_same("the training options", json{{"fixed", record["options"]}, {"epochs", o.epochs},
                  {"max_steps", o.max_steps}, {"backend", o.backend}, {"resume", resume}}.dump());
  dist.check_same("the data", fmt::format("{} {} {}", data.train->describe(), data.train->size(), data.eval->size()));
  int start_epoch = 0;
  int64_t step = 0;
  double elapsed_before = 0;
  std::unique_ptr<StepTrace> trace;
  std::vector<json> rows;
  if (resume) {
    const ResumePoint p = resume_point(run_dir, record, o, steps_per_epoch, model, opt, ema.get());
    start_epoch = p.epoch;
    step = p.step;
    elapsed_before = p.elapsed_seconds;
    // Metrics of epochs after the checkpoint (written before a kill) are dropped: they will be redone.
    // The checkpoint's own row is taken from its manifest if a kill came between the two writes.
    for (auto& r : read_metrics(metrics_path))
      if (r.value("epoch", 0) <= start_epoch) rows.push_back(std::move(r));
    if ((rows.empty() || rows.back().value("epoch", 0) != start_epoch) && p.metrics_row.is_object())
      rows.push_back(p.metrics_row);
    std::string text;
    for (auto& r : rows) text += r.dump() + "\n";
    if (dist.is_root()) write_text(metrics_path, text);
    dist.check_same("the checkpoint to resume from", fmt::format("epoch {} step {}", start_epoch, step));
    fmt::print("resuming {} from {} (epoch {}, step {})\n", run_dir, p.dir, start_epoch, step);
  } else {
    MF_CHECK(checkpoint_candidates(run_dir).empty(),
             "{} already holds a training run: resume it with --resume {}, or choose another --out", run_dir,
             run_dir);
    if (!init_weights.empty()) load_initial_weights(model, init_weights);
    if (!o.trace.empty()) trace = std::make_unique<StepTrace>(o.trace, model);
    if (dist.is_root()) {
      write_text(run_dir + "/config.json", config_to_json(config).dump(2) + "\n");
      write_text(run_dir + "/train_args.json", o.to_json().dump(2) + "\n");
      write_text(metrics_path, "");
      std::error_code ec;
      fs::remove(run_dir + "/skipped.txt", ec);
    }
  }
  TrainSummary summary;
  summary.forecast = forecast;
  auto note_forecast = [&](double mse, double mae) {
    if (summary.epochs_done == 0 || std::isnan(summary.best_mse) || mse < summary.best_mse) summary.best_mse = mse;
    summary.last_mse = mse;
    summary.last_mae = mae;
  };
  for (const auto& r : rows) {
    summary.last_top1 = r.value("top1", 0.0) / 100.0;
    summary.last_top5 = r.value("top5", 0.0) / 100.0;
    summary.best_top1 = std::max(summary.best_top1, summary.last_top1);
    if (forecast) {
      // A diverged epoch's NaN is stored as null (JSON has no NaN).
      const auto number = [&](const char* k) { return r.contains(k) && r[k].is_number() ? r[k].get<double>() : NAN; };
      note_forecast(number("mse"), number("mae"));
    }
    summary.epochs_done = r.value("epoch", 0);
  }
  if (start_epoch >= o.epochs) {
    fmt::print("{}: all {} epochs are done\n", run_dir, o.epochs);
    summary.epochs_done = start_epoch;
    summary.steps = step;
    summary.seconds = elapsed_before;
    return summary;
  }
  if (!resume) {
    log_skipped(run_dir, "while listing the training data", data.train->skipped_files());
    if (data.eval.get() != data.train.get())
      log_skipped(run_dir, "while listing the evaluation data", data.eval->skipped_files());
  }

  MixupOptions mix;
  mix.mixup_alpha = o.mixup;
  mix.cutmix_alpha = o.cutmix;
  mix.prob = o.mix_prob;
  mix.switch_prob = o.mix_switch_prob;
  mix.label_smoothing = o.label_smoothing;

  // Mixup and CutMix on a GPU: the plan is drawn on the host with the step's generator (the same
  // draws as mix_batch's), the images are mixed by the backend (op::mix_images, data/batch_mix.h):
  // the same bits as mixing on the host, without a pass over the batch on the step's critical path.
  // METAFORMER_BACKEND_MIX=0 mixes on the host as on the CPU. (--trace needs no Mixup, so its
  // record of the images is never of an unmixed batch.)
  const char* mix_env = std::getenv("METAFORMER_BACKEND_MIX");
  const bool backend_mix = mix.enabled() && !forecast && backend.device() != Device::CPU &&
                           !(mix_env && std::string(mix_env) == "0");
  // Augmentation by the backend (data/device_crops.h): the workers decode and draw, the backend
  // resizes, flips and normalises, with the same bytes as the workers' own transform. On by default
  // on a GPU backend (the same bits; the workers' time a sample falls to about 0.6×),
  // METAFORMER_BACKEND_AUGMENT=0 turns it off, =1 asks for it on any backend (the CPU's tests it).
  // With Mixup or CutMix it needs the backend to mix too; --trace records the loader's images, so
  // it keeps them.
  Tensor crop_table;
  const char* augment_env = std::getenv("METAFORMER_BACKEND_AUGMENT");
  const bool augment_asked = augment_env && std::string(augment_env) == "1";
  const bool augment_default = !augment_env && backend.device() != Device::CPU;
  if ((augment_asked || augment_default) && !forecast) {
    const auto ignored = [&](const std::string& why) {
      if (augment_asked) fmt::print(stderr, "note: METAFORMER_BACKEND_AUGMENT=1 is ignored: {}\n", why);
    };
    if (!data.train->supports_crops())
      ignored(fmt::format("{} is augmented by the loader only", data.train->describe()));
    else if (mix.enabled() && !backend_mix)
      ignored("Mixup and CutMix mix the loader's images (on the CPU backend, or with METAFORMER_BACKEND_MIX=0)");
    else if (!o.trace.empty())
      ignored("--trace records the loader's images");
    else {
      lo.packed_crops = true;
      fmt::print("augmentation: resized, flipped and normalised by the backend ({}), not the loader\n", backend.name());
      const std::vector<float> table = data.train->byte_normalisation();
      crop_table = Tensor::empty({3, 256});
      std::copy(table.begin(), table.end(), crop_table.data());
    }
  }

  fmt::print("training {} ({:.2f} M parameters) on {}{}: {} epochs x {} steps of {}, {} threads\n", config.name,
             static_cast<double>(model.num_parameters()) / 1e6, data.train->describe(),
             samples_used < data.train->size() ? fmt::format(", {} of them used (--subset)", samples_used) : "",
             o.epochs, steps_per_epoch, o.batch, num_threads());
  if (dist.world() > 1)
    fmt::print("data parallel: {} ranks x batch {} = {} per step ({} threads each)\n", dist.world(), lo.batch,
               o.batch, num_threads());
  std::fflush(stdout);

  const auto run_start = std::chrono::steady_clock::now();
  // Gradient buckets: with several ranks and fp32 all-reduces, each bucket of final gradients is
  // averaged while the backward pass goes on (MPI_Iallreduce on the host, NCCL on a stream of its
  // own on a GPU; train/grad_buckets.h). Made again if the flat gradient buffer is ever replaced.
  const bool bucketed = reduce_gradients && o.allreduce == "fp32" && o.bucket_mb > 0;
  if (reduce_alone) {
    fmt::print("data parallel: one rank, gradients averaged through NCCL anyway ({}; METAFORMER_ALLREDUCE_ONE_RANK)\n",
               bucketed ? fmt::format("buckets of {} MiB", o.bucket_mb) : fmt::format("one {} call", o.allreduce));
    std::fflush(stdout);
  }
  // The ranks, for the backend's NCCL all-reduce (MPI carries the communicator's id).
  auto rank_group = [&dist](bool bf16) {
    return RankGroup{dist.rank(), dist.world(),
                     [&dist](void* d, size_t n) { dist.broadcast(d, static_cast<int64_t>(n)); }, bf16};
  };
  std::unique_ptr<GradientBuckets> buckets_made;
  const void* buckets_flat = nullptr;
  auto gradient_buckets = [&]() -> GradientBuckets& {
    Tensor& flat = opt.flat_gradients();
    if (!buckets_made || buckets_flat != flat.raw()) {
      GradientBuckets::Reduce reduce;
      if (backend.device() == Device::CPU) {
        reduce = [&dist, &opt](int64_t offset, int64_t count) {
          dist.start_allreduce_sum(opt.flat_gradients().data() + offset, count);
        };
      } else {
        reduce = [&opt, &backend, rank_group](int64_t offset, int64_t count) {
          Tensor range = opt.flat_gradients().slice0(offset, offset + count);
          backend.allreduce_mean_start(range, rank_group(false));
        };
      }
      const auto elements = static_cast<int64_t>(o.bucket_mb * 1024 * 1024 / sizeof(float));
      buckets_made = std::make_unique<GradientBuckets>(model.named_parameters(), flat, elements, std::move(reduce));
      buckets_flat = flat.raw();
    }
    return *buckets_made;
  };
  double step_seconds_sum = 0;
  int64_t steps_timed = 0;
  for (int epoch = start_epoch; epoch < o.epochs && step < total_steps; ++epoch) {
    lo.epoch = epoch;
    lo.train = true;
    DataLoader loader(*data.train, lo);
    Progress progress(o.progress && dist.is_root(), epoch + 1, o.epochs,
                      std::min(loader.num_batches(), total_steps - step));
    const auto epoch_start = std::chrono::steady_clock::now();
    double loss_sum = 0;
    // The time the step loop spent waiting for the loader's next batch: the model (on a GPU, its
    // queue) starves when the workers cannot decode as fast as it trains.
    double data_wait_seconds = 0;
    int64_t loss_count = 0, images = 0, done = 0;
    // Steady throughput: images/s from the end of the epoch's kSteadyAfter-th step to its end, which
    // leaves out start-up (the first uploads and allocations, cuBLASLt's heuristics, graph captures)
    // that images_per_s includes. One synchronize marks the start; an epoch of kSteadyAfter steps or
    // fewer reports none. bench/gpu_train_side_by_side.py reads it.
    constexpr int64_t kSteadyAfter = 5;
    std::optional<std::chrono::steady_clock::time_point> steady_start;
    int64_t steady_images = 0, steps_in_epoch = 0;
    OpProfile profile;
    // METAFORMER_PROFILE_HOST=1: --profile counts the host's time per op, without waiting for the GPU.
    profile.host_only = env_is_one("METAFORMER_PROFILE_HOST");
    // A step's loss is read by the host one step late (Tensor::to_host_later): waiting for it
    // mid-step left the GPU idle while the host queued the backward pass. The order of the sum, the
    // divergence check (naming the step that diverged) and the checkpoint are unchanged; only the
    // progress line trails by a step.
    struct PendingLoss {
      int64_t step = 0;
      std::function<double()> mean;
    };
    std::optional<PendingLoss> pending;
    // METAFORMER_STEP_TIMES=1: each step after the first is waited for, and the time the host took
    // to queue it is told apart from the time it then waited for the GPU to finish it.
    const bool time_steps = env_is_one("METAFORMER_STEP_TIMES");
    double queue_seconds = 0, finish_wait_seconds = 0;
    std::array<double, 3> phase_seconds{};  // forward (with the batch's upload), backward, optimizer
    int64_t steps_split = 0;
    // Adds the pending step's loss to the epoch's sum and returns it (0 when none is pending).
    auto account_loss = [&]() -> double {
      if (!pending) return 0.0;
      const double loss = pending->mean();
      MF_CHECK(std::isfinite(loss), "the loss diverged at step {} (it is {}); try a lower --lr", pending->step, loss);
      loss_sum += loss;
      ++loss_count;
      pending.reset();
      return loss;
    };
    // A batch ready for its step: Mixup/CutMix applied with the step's generator, which the step
    // then goes on drawing from (drop path). With uploads ahead (Backend::uploads_ahead), the next
    // step's batch is made as soon as this step is queued, and uploaded while this step computes.
    struct Prepared {
      Batch batch;
      Rng rng;
      Tensor targets;
      std::chrono::steady_clock::duration mixing{};  // host time of the Mixup/CutMix, part of its step's
      MixPlan plan;  // with backend_mix: what the backend does to the images in the step
    };
    const auto next_batch = [&]() {
      const auto wait_start = std::chrono::steady_clock::now();
      auto b = loader.next();
      data_wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - wait_start).count();
      return b;
    };
    // The next batch with a readable sample, prepared for step `at`; nothing at the epoch's end.
    const auto prepare = [&](int64_t at) -> std::optional<Prepared> {
      while (true) {
        auto batch = next_batch();
        if (!batch) return std::nullopt;
        ++done;
        if (batch->labels.empty()) {
          // Ranks step together: one cannot skip a step alone.
          MF_CHECK(dist.world() == 1, "every sample of batch {} of epoch {} is unreadable (rank {}); a data-parallel "
                   "run cannot skip a step on one rank", batch->index, epoch + 1, dist.rank());
          continue;
        }
        const auto mix_start = std::chrono::steady_clock::now();
        Rng rng(rank_step_seed(o.seed, at, dist.rank()));
        MixPlan plan;
        Tensor targets;
        if (forecast) {
          targets = batch->targets;
        } else if (backend_mix) {
          plan = draw_mix(batch->images.dim(1), batch->images.dim(2), mix, rng);
          targets = mix_targets(batch->labels, config.num_classes, mix, plan);
        } else {
          targets = mix_batch(batch->images, batch->labels, config.num_classes, mix, rng);
        }
        return Prepared{std::move(*batch), rng, std::move(targets), std::chrono::steady_clock::now() - mix_start,
                        plan};
      }
    };
    const bool ahead = backend.uploads_ahead();
    std::optional<Prepared> staged;
    while (step < total_steps) {
      const bool was_staged = staged.has_value();
      std::optional<Prepared> prepared = was_staged ? std::move(staged) : prepare(step);
      staged.reset();
      if (!prepared) break;
      // The step's host time starts with its own mixing (done during the previous step when staged).
      const auto t0 = std::chrono::steady_clock::now() - (was_staged ? std::chrono::steady_clock::duration{}
                                                                      : prepared->mixing);
      // Room for the next batch's upload, in the device's order before this step's work.
      if (ahead && step + 1 < total_steps) backend.reserve_upload(prepared->batch.images.shape());
      const std::optional<Batch> batch(std::move(prepared->batch));
      Rng rng = prepared->rng;
      const Tensor targets = prepared->targets;
      Ctx ctx;
      ctx.exec.backend = &backend;
      ctx.exec.profile = o.profile ? &profile : nullptr;
      ctx.training = true;
      ctx.rng = &rng;
      opt.zero_grad();
      // Gradient buckets (data parallelism): averaged across the ranks as the backward pass finishes
      // them, instead of all after it.
      GradientBuckets* buckets = bucketed ? &gradient_buckets() : nullptr;
      if (buckets) {
        buckets->begin_step();
        ctx.on_backward_done = [buckets](const Module& m) { buckets->module_done(m); };
      }
      const bool mixing = prepared->plan.mode != MixPlan::Mode::none;
      Tensor input = batch->crop_headers.defined()
                         ? op::augment_crops(ctx.exec, batch->images, batch->crop_headers, crop_table, mixing)
                         : batch->images;
      if (mixing) input = op::mix_images(ctx.exec, input, prepared->plan);
      Tensor logits = model.run(ctx, input);
      const auto t_forward = std::chrono::steady_clock::now();
      Tensor dlogits;
      account_loss();  // the previous step's, long computed by now
      if (forecast) {
        const double mse = forecast_mse(logits.to(Device::CPU), targets, dlogits);
        pending = PendingLoss{step, [mse] { return mse; }};
      } else {
        auto losses = op::cross_entropy_losses(ctx.exec, logits, targets, dlogits).to_host_later();
        pending = PendingLoss{step, [losses] { return op::mean_loss(losses()); }};
      }
      if (trace || loss_count == 0) {
        // The trace records each step's loss with its step; the first step's is read at once, so
        // that the progress line has a loss to show.
        const double loss = account_loss();
        if (trace) trace->record(step, sched.at(step), loss, batch->images, batch->labels);
      }
      model.backward(ctx, dlogits);
      const auto t_backward = std::chrono::steady_clock::now();
      if (buckets) {
        buckets->finish();
        if (backend.device() == Device::CPU) {
          dist.finish_allreduce_mean(opt.flat_gradients().data(), opt.flat_gradients().numel());
        } else {
          backend.allreduce_wait();
          opt.flat_gradients().bump_version();
        }
      } else if (backend.device() == Device::CPU) {
        average_gradients(dist, opt.flat_gradients(), o.allreduce == "bf16");  // MPI, in place
      } else if (reduce_gradients) {  // NCCL, on the device, on the backend's stream
        // One all-reduce over the buffer that every gradient views (AdamW::zero_grad).
        backend.allreduce_mean({&opt.flat_gradients()}, rank_group(o.allreduce == "bf16"));
      }
      if (o.clip_grad > 0) opt.clip_grad_norm(o.clip_grad);
      opt.step(sched.at(step));
      if (ema) ema->update();
      ++step;
      // The next step's batch, with this step queued: its upload runs while this step computes.
      if (ahead && step < total_steps) {
        staged = prepare(step);
        if (staged) backend.upload_ahead(staged->batch.images);
      }
      maybe_die_at_step(step);
      images += static_cast<int64_t>(batch->labels.size());
      if (++steps_in_epoch == kSteadyAfter && step < total_steps) {
        backend.synchronize();
        steady_start = std::chrono::steady_clock::now();
        steady_images = images;
      }
      if (time_steps && done > 1) {
        const auto s0 = std::chrono::steady_clock::now();
        backend.synchronize();
        queue_seconds += std::chrono::duration<double>(s0 - t0).count();
        phase_seconds[0] += std::chrono::duration<double>(t_forward - t0).count();
        phase_seconds[1] += std::chrono::duration<double>(t_backward - t_forward).count();
        phase_seconds[2] += std::chrono::duration<double>(s0 - t_backward).count();
        finish_wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
        ++steps_split;
      }
      step_seconds_sum += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++steps_timed;
      const double since = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
      progress.update(done, loss_sum / static_cast<double>(loss_count),
                      static_cast<double>(images * dist.world()) / since,
                      static_cast<double>(total_steps - step) * (step_seconds_sum / static_cast<double>(steps_timed)));
    }
    account_loss();
    backend.synchronize();  // the epoch's time includes its last step on the device
    const auto train_end = std::chrono::steady_clock::now();
    const double train_seconds = std::chrono::duration<double>(train_end - epoch_start).count();
    // Every rank steps together, so one rank's steady rate times the ranks is the job's.
    double steady_images_per_s = 0;
    if (steady_start && images > steady_images) {
      const double seconds = std::chrono::duration<double>(train_end - *steady_start).count();
      if (seconds > 0) steady_images_per_s = static_cast<double>((images - steady_images) * dist.world()) / seconds;
    }
    if (time_steps && steps_split > 0)
      // Where a GPU step's wall time goes: a host that queues a step in less time than the GPU then
      // takes to finish it is not the bound (docs/cuda.md).
      fmt::print(stderr, "step times over {} steps: the host queued a step in {:.2f} ms (forward and loss {:.2f}, "
                 "backward {:.2f}, gradient exchange and optimizer {:.2f}), then waited {:.2f} ms for the GPU to "
                 "finish it\n", steps_split, 1e3 * queue_seconds / static_cast<double>(steps_split),
                 1e3 * phase_seconds[0] / static_cast<double>(steps_split),
                 1e3 * phase_seconds[1] / static_cast<double>(steps_split),
                 1e3 * phase_seconds[2] / static_cast<double>(steps_split),
                 1e3 * finish_wait_seconds / static_cast<double>(steps_split));
    if (data_wait_seconds > 1.0 && data_wait_seconds > 0.1 * train_seconds && dist.is_root())
      fmt::print(stderr, "training waited {:.1f} s of this epoch's {:.1f} s for data: the data loader ({} worker{}) "
                 "is the bound; more --workers may help\n", data_wait_seconds, train_seconds, o.workers,
                 o.workers == 1 ? "" : "s");
    // The epoch's figures over all ranks: the mean of their losses, their images, their skipped samples.
    double epoch_sums[3] = {loss_sum, static_cast<double>(images), static_cast<double>(loader.skipped().size())};
    dist.allreduce_sum(epoch_sums, 3);
    loss_sum = epoch_sums[0] / dist.world();
    images = static_cast<int64_t>(epoch_sums[1]);
    const auto train_skipped = static_cast<int64_t>(epoch_sums[2]);
    average_buffers(dist, model.named_parameters());  // BatchNorm statistics: the ranks' mean
    if (o.profile) {
      fmt::print("{} per op (forward + backward, {:.1f} s of {:.1f} s training):",
                 profile.host_only ? "host time" : "time", profile.total_seconds(), train_seconds);
      for (int k = 0; k < static_cast<int>(OpKind::kCount); ++k)
        if (profile.seconds[static_cast<size_t>(k)] > 0.005)
          fmt::print(" {} {:.2f} s", op_name(OpKind(k)), profile.seconds[static_cast<size_t>(k)]);
      fmt::print("\n");
    }

    // Each rank evaluates its share of the evaluation data; the sums are reduced.
    const EvalResult ev = forecast ? EvalResult{} : sum_over_ranks(dist, evaluate(model, backend, *data.eval,
        o.eval_batch, o.workers, o.eval_subset, dist.rank(), dist.world()));
    ForecastEvalResult fev;
    if (forecast)
      fev = sum_over_ranks(dist, evaluate_forecast(model, backend, *data.eval, o.eval_batch, o.workers, o.eval_subset,
                                                   dist.rank(), dist.world()));
    json row{{"epoch", epoch + 1},
             {"step", step},
             {"lr", sched.at(std::max<int64_t>(0, step - 1))},
             {"train_loss", loss_count ? loss_sum / static_cast<double>(loss_count) : 0.0},
             {"eval_loss", forecast ? fev.mse : ev.loss},
             {"images_per_s", train_seconds > 0 ? static_cast<double>(images) / train_seconds : 0.0},
             {"data_wait_seconds", data_wait_seconds},
             {"epoch_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count()},
             {"elapsed_seconds",
              elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count()},
             {"peak_rss_mb", peak_rss_mb()},
             {"skipped_samples", train_skipped + ev.skipped},
             {"nonfinite_samples", forecast ? fev.nonfinite : ev.nonfinite}};
    if (steady_images_per_s > 0) row["steady_images_per_s"] = steady_images_per_s;
    if (backend.device() != Device::CPU) row["peak_gpu_mb"] = static_cast<double>(gpu_peak_bytes()) / (1024.0 * 1024.0);
    if (dist.world() > 1) row["ranks"] = dist.world();
    if (forecast) {
      row["mse"] = fev.mse;
      row["mae"] = fev.mae;
    } else {
      row["top1"] = 100.0 * ev.top1;
      row["top5"] = 100.0 * ev.top5;
    }
    if (ema && forecast) {
      MetaFormer averaged(config);
      ema->copy_to(averaged);
      const ForecastEvalResult e2 = sum_over_ranks(dist, evaluate_forecast(averaged, backend, *data.eval, o.eval_batch,
                                                                           o.workers, o.eval_subset, dist.rank(),
                                                                           dist.world()));
      row["ema_mse"] = e2.mse;
      row["ema_mae"] = e2.mae;
    } else if (ema) {
      MetaFormer averaged(config);
      ema->copy_to(averaged);
      const EvalResult e2 = sum_over_ranks(dist, evaluate(averaged, backend, *data.eval, o.eval_batch, o.workers,
                                                          o.eval_subset, dist.rank(), dist.world()));
      row["ema_top1"] = 100.0 * e2.top1;
      row["ema_top5"] = 100.0 * e2.top5;
      row["ema_nonfinite_samples"] = e2.nonfinite;
      if (const std::string w = nonfinite_warning(e2); !w.empty() && dist.is_root())
        fmt::print(stderr, "EMA weights: {}\n", w);
    }
    log_skipped(run_dir, fmt::format("in training epoch {}", epoch + 1), loader.skipped());
    log_skipped(run_dir, fmt::format("in the evaluation after epoch {}", epoch + 1), ev.skipped_messages);

    // The checkpoint first, then the metrics row: a row in metrics.jsonl always has its checkpoint.
    // A kill between the two loses no row, as the manifest keeps a copy that a resume restores.
    CheckpointFiles files;
    files.metadata = {{"format", "pt"}, {"model", config.name}, {"written_by", "metaformer.cpp"}};
    files.record = record;
    files.metrics_row = row;
    for (auto& [name, p] : model.named_parameters()) files.model.push_back({name, p->value.to(Device::CPU), {}, {}});
    if (ema) files.model_ema = ema->entries();
    opt.save_state(files.state, "optimizer.");
    const auto elapsed_ms = static_cast<int64_t>(row["elapsed_seconds"].get<double>() * 1000.0);
    files.state.push_back({"epoch", Tensor(), {epoch + 1}, Shape{1}});
    files.state.push_back({"step", Tensor(), {step}, Shape{1}});
    files.state.push_back({"elapsed_ms", Tensor(), {elapsed_ms}, Shape{1}});
    files.state.push_back({"seed", Tensor(), {static_cast<int64_t>(o.seed)}, Shape{1}});
    // The ranks hold the same weights bit for bit (same start, same averaged steps): checked before
    // rank 0 alone writes them.
    check_same_parameters(dist, model.named_parameters(), fmt::format("the weights after epoch {}", epoch + 1));
    if (dist.is_root()) {
      write_checkpoint(run_dir, epoch + 1, files, o.keep_checkpoints);
      save_safetensors(run_dir + "/model.safetensors", files.model, files.metadata);
      if (ema) save_safetensors(run_dir + "/model_ema.safetensors", files.model_ema, files.metadata);
      rows.push_back(row);
      append_line(metrics_path, row.dump());
      write_curves(run_dir, rows, config.name);
    }

    if (forecast) {
      fmt::print("epoch {}/{}: train MSE {:.4f}, test MSE {:.4f}, test MAE {:.4f}{}, {:.0f} windows/s, {} elapsed\n",
                 epoch + 1, o.epochs, row["train_loss"].get<double>(), fev.mse, fev.mae,
                 ema ? fmt::format(" (EMA test MSE {:.4f})", row["ema_mse"].get<double>()) : "",
                 row["images_per_s"].get<double>(), format_duration(row["elapsed_seconds"].get<double>()));
      if (fev.nonfinite && dist.is_root())
        fmt::print(stderr, "warning: {} of {} test windows had non-finite forecasts; the MSE is {}\n", fev.nonfinite,
                   fev.count, fev.mse);
      note_forecast(fev.mse, fev.mae);
    } else {
      fmt::print("epoch {}/{}: train loss {:.4f}, test loss {:.4f}, top-1 {:.2f}%, top-5 {:.2f}%{}, {:.0f} img/s, "
                 "{} elapsed\n",
                 epoch + 1, o.epochs, row["train_loss"].get<double>(), ev.loss, 100.0 * ev.top1, 100.0 * ev.top5,
                 ema ? fmt::format(" (EMA top-1 {:.2f}%)", row["ema_top1"].get<double>()) : "",
                 row["images_per_s"].get<double>(), format_duration(row["elapsed_seconds"].get<double>()));
      if (const std::string w = nonfinite_warning(ev); !w.empty() && dist.is_root()) fmt::print(stderr, "{}\n", w);
    }
    std::fflush(stdout);
    summary.epochs_done = epoch + 1;
    summary.last_top1 = ev.top1;
    summary.last_top5 = ev.top5;
    summary.best_top1 = std::max(summary.best_top1, ev.top1);
  }
  summary.steps = step;
  summary.seconds = elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  return summary;
}

}  // namespace mf
