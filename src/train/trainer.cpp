#include "train/trainer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>

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
#include "train/ema.h"
#include "train/evaluate.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace mf {

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
void maybe_die_at_step(int64_t step) {
  static const char* v = std::getenv("MF_DEBUG_KILL_AT_STEP");
  if (v && std::atoll(v) == step) std::raise(SIGKILL);
}

}  // namespace

TrainSummary train(MetaFormerConfig config, const TrainOptions& o, const DataSplits& data, const std::string& run_dir,
                   bool resume, const std::string& init_weights) {
  MF_CHECK(o.epochs >= 1, "--epochs must be at least 1");
  MF_CHECK(o.batch >= 1, "--batch must be at least 1");
  MF_CHECK(o.lr > 0, "--lr must be positive");
  set_num_threads(o.threads);
  Backend& backend = get_backend(o.backend);
  if (o.drop_path >= 0) config.drop_path_rate = o.drop_path;
  MF_CHECK(config.num_classes == data.train->num_classes(), "the model has {} classes but {} has {}",
           config.num_classes, data.train->describe(), data.train->num_classes());
  MF_CHECK(config.in_chans == data.train->channels(), "the model takes {} input channels but {} has {}",
           config.in_chans, data.train->describe(), data.train->channels());

  MetaFormer model(config);
  model.check_backend(backend);
  initialize_parameters(model, o.seed);
  AdamW opt(model, {o.lr, 0.9, 0.999, 1e-8, o.weight_decay});
  std::unique_ptr<ModelEma> ema;
  if (o.ema_decay > 0) ema = std::make_unique<ModelEma>(model, o.ema_decay);

  fs::create_directories(run_dir);
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  int start_epoch = 0;
  int64_t step = 0;
  double elapsed_before = 0;
  std::vector<json> rows;
  if (resume) {
    const auto ckpt = latest_checkpoint(run_dir);
    MF_CHECK(ckpt.has_value(), "{}: no checkpoint to resume from", run_dir);
    load_weights(model, SafeTensors::open(*ckpt + "/model.safetensors"));
    const SafeTensors state = SafeTensors::open(*ckpt + "/train_state.safetensors");
    opt.load_state(state, "optimizer.");
    if (ema) ema->load(SafeTensors::open(*ckpt + "/model_ema.safetensors"));
    start_epoch = static_cast<int>(state.load_int("epoch").at(0));
    step = state.load_int("step").at(0);
    elapsed_before = static_cast<double>(state.load_int("elapsed_ms").at(0)) / 1000.0;
    // Metrics of epochs after the checkpoint (written before a kill) are dropped: they will be redone.
    for (auto& r : read_metrics(metrics_path))
      if (r.value("epoch", 0) <= start_epoch) rows.push_back(std::move(r));
    std::string text;
    for (auto& r : rows) text += r.dump() + "\n";
    write_text(metrics_path, text);
    fmt::print("resuming {} from {} (epoch {}, step {})\n", run_dir, *ckpt, start_epoch, step);
  } else {
    MF_CHECK(!latest_checkpoint(run_dir).has_value(),
             "{} already holds a training run: resume it with --resume {}, or choose another --out", run_dir,
             run_dir);
    if (!init_weights.empty()) load_initial_weights(model, init_weights);
    write_text(run_dir + "/config.json", config_to_json(config).dump(2) + "\n");
    write_text(run_dir + "/train_args.json", o.to_json().dump(2) + "\n");
    write_text(metrics_path, "");
  }
  if (start_epoch >= o.epochs) {
    fmt::print("{}: all {} epochs are done\n", run_dir, o.epochs);
    return {start_epoch, step, 0, 0, 0, elapsed_before};
  }

  LoaderOptions lo;
  lo.batch = o.batch;
  lo.seed = o.seed;
  lo.workers = o.workers;
  lo.subset = o.subset;
  const int64_t steps_per_epoch = DataLoader::epoch_order(data.train->size(), lo).size() / static_cast<size_t>(o.batch);
  MF_CHECK(steps_per_epoch >= 1, "{} samples make no batch of {}", data.train->size(), o.batch);
  LrSchedule sched;
  sched.lr = o.lr;
  sched.min_lr = o.min_lr;
  sched.warmup_lr = o.warmup_lr;
  sched.warmup_steps = static_cast<int64_t>(o.warmup_epochs * static_cast<double>(steps_per_epoch));
  sched.total_steps = steps_per_epoch * o.epochs;
  const int64_t total_steps = o.max_steps > 0 ? std::min(o.max_steps, sched.total_steps) : sched.total_steps;

  MixupOptions mix;
  mix.mixup_alpha = o.mixup;
  mix.cutmix_alpha = o.cutmix;
  mix.prob = o.mix_prob;
  mix.switch_prob = o.mix_switch_prob;
  mix.label_smoothing = o.label_smoothing;

  fmt::print("training {} ({:.2f} M parameters) on {}: {} epochs x {} steps of {}, {} threads\n", config.name,
             static_cast<double>(model.num_parameters()) / 1e6, data.train->describe(), o.epochs, steps_per_epoch,
             o.batch, num_threads());
  std::fflush(stdout);

  TrainSummary summary;
  const auto run_start = std::chrono::steady_clock::now();
  double step_seconds_sum = 0;
  int64_t steps_timed = 0;
  for (int epoch = start_epoch; epoch < o.epochs && step < total_steps; ++epoch) {
    lo.epoch = epoch;
    lo.train = true;
    DataLoader loader(*data.train, lo);
    Progress progress(o.progress, epoch + 1, o.epochs, std::min(loader.num_batches(), total_steps - step));
    const auto epoch_start = std::chrono::steady_clock::now();
    double loss_sum = 0;
    int64_t loss_count = 0, images = 0, done = 0;
    OpProfile profile;
    while (step < total_steps) {
      auto batch = loader.next();
      if (!batch) break;
      ++done;
      if (batch->labels.empty()) continue;
      const auto t0 = std::chrono::steady_clock::now();
      Rng rng(step_seed(o.seed, step));
      Tensor targets = mix_batch(batch->images, batch->labels, config.num_classes, mix, rng);
      Ctx ctx;
      ctx.exec.backend = &backend;
      ctx.exec.profile = o.profile ? &profile : nullptr;
      ctx.training = true;
      ctx.rng = &rng;
      opt.zero_grad();
      Tensor logits = model.run(ctx, batch->images);
      Tensor dlogits;
      const double loss = op::cross_entropy(ctx.exec, logits, targets, dlogits);
      MF_CHECK(std::isfinite(loss), "the loss diverged at step {} (it is {}); try a lower --lr", step, loss);
      model.backward(ctx, dlogits);
      if (o.clip_grad > 0) opt.clip_grad_norm(o.clip_grad);
      opt.step(sched.at(step));
      if (ema) ema->update();
      ++step;
      maybe_die_at_step(step);
      loss_sum += loss;
      ++loss_count;
      images += static_cast<int64_t>(batch->labels.size());
      step_seconds_sum += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++steps_timed;
      const double since = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
      progress.update(done, loss_sum / static_cast<double>(loss_count), static_cast<double>(images) / since,
                      static_cast<double>(total_steps - step) * (step_seconds_sum / static_cast<double>(steps_timed)));
    }
    const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    if (o.profile) {
      fmt::print("time per op (forward + backward, {:.1f} s of {:.1f} s training):", profile.total_seconds(),
                 train_seconds);
      for (int k = 0; k < static_cast<int>(OpKind::kCount); ++k)
        if (profile.seconds[static_cast<size_t>(k)] > 0.005)
          fmt::print(" {} {:.2f} s", op_name(OpKind(k)), profile.seconds[static_cast<size_t>(k)]);
      fmt::print("\n");
    }

    const EvalResult ev = evaluate(model, backend, *data.eval, o.eval_batch, o.workers, o.eval_subset);
    json row{{"epoch", epoch + 1},
             {"step", step},
             {"lr", sched.at(std::max<int64_t>(0, step - 1))},
             {"train_loss", loss_count ? loss_sum / static_cast<double>(loss_count) : 0.0},
             {"eval_loss", ev.loss},
             {"top1", 100.0 * ev.top1},
             {"top5", 100.0 * ev.top5},
             {"images_per_s", train_seconds > 0 ? static_cast<double>(images) / train_seconds : 0.0},
             {"epoch_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count()},
             {"elapsed_seconds",
              elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count()},
             {"peak_rss_mb", peak_rss_mb()},
             {"skipped_samples", static_cast<int64_t>(loader.skipped().size()) + ev.skipped},
             {"nonfinite_samples", ev.nonfinite}};
    if (ema) {
      MetaFormer averaged(config);
      ema->copy_to(averaged);
      const EvalResult e2 = evaluate(averaged, backend, *data.eval, o.eval_batch, o.workers, o.eval_subset);
      row["ema_top1"] = 100.0 * e2.top1;
      row["ema_top5"] = 100.0 * e2.top5;
      row["ema_nonfinite_samples"] = e2.nonfinite;
      if (const std::string w = nonfinite_warning(e2); !w.empty()) fmt::print(stderr, "EMA weights: {}\n", w);
    }
    for (const auto& msg : loader.skipped()) fmt::print(stderr, "skipped an unreadable sample: {}\n", msg);
    rows.push_back(row);
    {
      std::ofstream f(metrics_path, std::ios::app);
      f << row.dump() << "\n";
      f.flush();
      MF_CHECK(f.good(), "cannot append to {}", metrics_path);
    }
    write_curves(run_dir, rows, config.name);

    CheckpointFiles files;
    files.metadata = {{"format", "pt"}, {"model", config.name}, {"written_by", "metaformer.cpp"}};
    for (auto& [name, p] : model.named_parameters()) files.model.push_back({name, p->value, {}, {}});
    if (ema) files.model_ema = ema->entries();
    opt.save_state(files.state, "optimizer.");
    const auto elapsed_ms = static_cast<int64_t>(row["elapsed_seconds"].get<double>() * 1000.0);
    files.state.push_back({"epoch", Tensor(), {epoch + 1}, Shape{1}});
    files.state.push_back({"step", Tensor(), {step}, Shape{1}});
    files.state.push_back({"elapsed_ms", Tensor(), {elapsed_ms}, Shape{1}});
    files.state.push_back({"seed", Tensor(), {static_cast<int64_t>(o.seed)}, Shape{1}});
    write_checkpoint(run_dir, epoch + 1, files, o.keep_checkpoints);
    save_safetensors(run_dir + "/model.safetensors", files.model, files.metadata);
    if (ema) save_safetensors(run_dir + "/model_ema.safetensors", files.model_ema, files.metadata);

    fmt::print("epoch {}/{}: train loss {:.4f}, test loss {:.4f}, top-1 {:.2f}%, top-5 {:.2f}%{}, {:.0f} img/s, "
               "{} elapsed\n",
               epoch + 1, o.epochs, row["train_loss"].get<double>(), ev.loss, 100.0 * ev.top1, 100.0 * ev.top5,
               ema ? fmt::format(" (EMA top-1 {:.2f}%)", row["ema_top1"].get<double>()) : "",
               row["images_per_s"].get<double>(), format_duration(row["elapsed_seconds"].get<double>()));
    std::fflush(stdout);
    if (const std::string w = nonfinite_warning(ev); !w.empty()) fmt::print(stderr, "{}\n", w);
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
