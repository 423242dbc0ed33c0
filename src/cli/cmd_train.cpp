// metaformer train: train from scratch, fine-tune (--weights) or resume (--resume) a MetaFormer.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

#include "cli/common.h"
#include "core/error.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "model/loader.h"
#include "model/zoo.h"
#include "train/distributed.h"
#include "train/evaluate.h"
#include "train/trainer.h"

namespace mf::cli {

namespace {
void print_done(const TrainSummary& s) {
  if (s.forecast)
    fmt::print("done: {} epochs, {} steps, test MSE {:.4f}, MAE {:.4f}, {:.0f} s\n", s.epochs_done, s.steps, s.last_mse,
               s.last_mae, s.seconds);
  else
    fmt::print("done: {} epochs, {} steps, top-1 {:.2f}%, {:.0f} s\n", s.epochs_done, s.steps, 100 * s.last_top1,
               s.seconds);
}

// --device, or for one rank of several on GPUs, the GPU of its local rank (cuda:0, cuda:1, ... on
// each host; docs/distributed.md).
std::string device_of_rank(const std::string& device, const std::string& backend, const Distributed& dist) {
  if (!device.empty() || backend != "cuda" || dist.world() == 1) return device;
  return "cuda:" + std::to_string(dist.local_rank());
}
}  // namespace

void register_train(CLI::App& app) {
  struct Args {
    ModelArgs model;
    std::string data, out, resume, device;
    TrainOptions o;
    bool no_progress = false;
    int64_t max_image_pixels = int64_t{1} << 28;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("train", "train or fine-tune a model (Fashion-MNIST, an image folder, ListOps, or a forecasting series)");
  const auto [model, config] = add_model_choice(sub, a->model, "model name from the zoo");
  sub->add_option("--data,-d", a->data, "fashion-mnist, long-range (synthetic; docs/compare.md), listops[-N] (sequences; "
                  "docs/sequences.md), co2, sunspots or csv:PATH (forecasting; docs/sequences.md), a folder of IDX "
                  "files, or an image folder (DIR/<class>/...)");
  sub->add_option("--out,-o", a->out, "run folder: checkpoints, metrics.jsonl, curves.svg");
  auto* resume = sub->add_option("--resume", a->resume, "continue the run in this folder from its last checkpoint");
  resume->excludes(model)->excludes(config);
  auto* weights = sub->add_option("--weights,-w", a->model.weights, "fine-tune from these weights (a classifier of "
                                  "another size is re-initialised)")->excludes(resume);
  add_pretrained_option(sub, a->model, model, config, weights);
  auto& o = a->o;
  sub->add_option("--epochs,-e", o.epochs, "epochs")->capture_default_str()->check(CLI::Range(1, 100000));
  sub->add_option("--batch,-b", o.batch, "batch size (per rank under mpirun: a step's batch is ranks x this)")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  sub->add_option("--lr", o.lr, "peak learning rate (AdamW)")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--min-lr", o.min_lr, "learning rate at the end of the cosine decay")->capture_default_str();
  sub->add_option("--warmup-epochs", o.warmup_epochs, "linear warm-up length")->capture_default_str();
  sub->add_option("--weight-decay", o.weight_decay, "AdamW weight decay (not on norms, biases, scales)")
      ->capture_default_str();
  sub->add_option("--label-smoothing", o.label_smoothing, "label smoothing")->capture_default_str()->check(CLI::Range(0.0, 0.99));
  sub->add_option("--drop-path", o.drop_path, "stochastic depth rate at the last block (default: the model's)");
  sub->add_option("--clip-grad", o.clip_grad, "clip the global gradient norm (0: off)")->capture_default_str();
  sub->add_option("--mixup", o.mixup, "Mixup alpha (0: off)")->capture_default_str();
  sub->add_option("--cutmix", o.cutmix, "CutMix alpha (0: off)")->capture_default_str();
  sub->add_option("--mix-prob", o.mix_prob, "probability of mixing a batch")->capture_default_str();
  sub->add_option("--ema", o.ema_decay, "keep an EMA of the weights with this decay (0: off)")->capture_default_str();
  sub->add_option("--seed", o.seed, "seed of initialisation, data order and augmentation")->capture_default_str();
  sub->add_option("--threads,-t", o.threads, "compute threads (default: all cores)");
  sub->add_option("--workers", o.workers, "data-loading threads")->capture_default_str()->check(CLI::Range(0, 64));
  sub->add_option("--subset", o.subset, "train on only this many samples (0: all)")->capture_default_str();
  sub->add_option("--eval-subset", o.eval_subset, "evaluate on only this many samples (0: all)")->capture_default_str();
  sub->add_option("--max-steps", o.max_steps, "stop after this many steps (0: all epochs)")->capture_default_str();
  auto* backend = sub->add_option("--backend", o.backend, "cpu, ref or cuda (fp32 on the GPU; docs/cuda.md); may change on --resume")
                      ->capture_default_str();
  sub->add_option("--device", a->device, "cuda:N with --backend cuda (default cuda:0)");
  auto* matmul = sub->add_option("--matmul", o.matmul, "cuda: how fp32 matrix products multiply: fp32 (exact), tf32 or "
                                 "bf16 (tensor cores; docs/cuda.md); may change on --resume")
                     ->capture_default_str()
                     ->check(CLI::IsMember({"fp32", "tf32", "bf16"}));
  auto* dtype = sub->add_option("--dtype", o.dtype, "cuda: activations stored in fp32, or bf16 (autocast's mixed "
                                "precision: fp32 weights and optimizer; docs/cuda.md); may change on --resume")
                    ->capture_default_str()
                    ->check(CLI::IsMember({"fp32", "bf16"}));
  auto* allreduce = sub->add_option("--allreduce", o.allreduce, "under mpirun: gradients travel between the ranks in "
                                    "fp32 or bf16 (half the bytes; docs/distributed.md); may change on --resume")
                        ->capture_default_str()
                        ->check(CLI::IsMember({"fp32", "bf16"}));
  auto* bucket = sub->add_option("--bucket-mb", o.bucket_mb, "under mpirun: average the gradients across the ranks in "
                                 "buckets of this many MiB while the backward pass goes on (0: all at once after "
                                 "it; docs/distributed.md); may change on --resume")
                     ->capture_default_str()
                     ->check(CLI::Range(0.0, 1e6));
  sub->add_option("--max-image-pixels", a->max_image_pixels,
                  "image folders: skip images with more pixels than this (decompression bombs)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_flag("--no-progress", a->no_progress, "no progress bar");
  sub->add_flag("--profile", a->o.profile, "print the time per op family after each epoch");
  sub->add_option("--trace", a->o.trace, "write the initial weights and every step's lr, loss and batch to this folder, "
                  "to replay the run elsewhere (bench/loss_curve_vs_torch.py; needs --drop-path 0, no mixup)");
  sub->callback([a, backend, matmul, dtype, allreduce, bucket] {
    TrainOptions o = a->o;
    o.progress = !a->no_progress;
    // Under mpirun: one rank of a data-parallel job (docs/distributed.md). Rank 0 alone prints; the
    // others' standard output goes nowhere (their errors still reach stderr).
    const Distributed& dist = distributed();
    if (!dist.is_root()) {
      std::fflush(stdout);
      if (std::FILE* null = std::freopen("/dev/null", "w", stdout); !null) fail("cannot silence rank {}", dist.rank());
    }
    if (o.threads == 0) o.threads = default_rank_threads(dist);
    if (!a->resume.empty()) {
      // The run's own description and options; --epochs may extend it, --threads/--workers may change.
      const std::string dir = a->resume;
      MF_CHECK(std::filesystem::is_directory(dir), "--resume {}: no such run folder", dir);
      MetaFormerConfig config = load_config(dir + "/config.json");
      const auto bytes = read_file(dir + "/train_args.json");
      auto j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
      MF_CHECK(!j.is_discarded() && j.is_object(), "{}/train_args.json is not valid JSON", dir);
      TrainOptions saved = TrainOptions::from_json(j);
      const std::string data = a->data.empty() ? saved.data : a->data;
      MF_CHECK(!data.empty(), "{}: the run does not say which data it used; give --data", dir);
      saved.epochs = std::max(saved.epochs, o.epochs == TrainOptions{}.epochs ? saved.epochs : o.epochs);
      saved.threads = o.threads;
      saved.workers = o.workers;
      saved.progress = o.progress;
      saved.trace = o.trace;  // refused by train(): a trace starts at the first step
      if (backend->count() > 0) saved.backend = o.backend;  // a run may move between CPU and GPU
      if (matmul->count() > 0) saved.matmul = o.matmul;
      if (dtype->count() > 0) saved.dtype = o.dtype;
      if (allreduce->count() > 0) saved.allreduce = o.allreduce;
      if (bucket->count() > 0) saved.bucket_mb = o.bucket_mb;
      select_device(device_of_rank(a->device, saved.backend, dist), saved.backend);
      DataSplits splits = open_data_for(data, config, a->max_image_pixels);
      const TrainSummary s = train(config, saved, splits, dir, /*resume=*/true);
      print_done(s);
      return;
    }
    MF_CHECK(!a->model.model.empty() || !a->model.config.empty(), "give a model: --model NAME or --config FILE");
    MF_CHECK(!a->data.empty(), "give --data (fashion-mnist, or a folder)");
    MF_CHECK(!a->out.empty(), "give --out RUN_DIR");
    select_device(device_of_rank(a->device, o.backend, dist), o.backend);
    MetaFormerConfig config = resolve_config(a->model);
    DataSplits splits = open_data_for(a->data, config, a->max_image_pixels);
    o.data = a->data;
    // --batch is per rank; the run records the global batch, which a --resume keeps whatever the number
    // of ranks then (each takes its share).
    o.batch *= dist.world();
    TrainSummary s = train(config, o, splits, a->out, /*resume=*/false, weights_file(a->model));
    print_done(s);
  });
}

void register_eval(CLI::App& app) {
  struct Args {
    ModelArgs model;
    std::string data;
    std::string split = "eval";
    int64_t batch = 256;
    int workers = 2;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("eval", "accuracy of a model on Fashion-MNIST, an image folder or ListOps; a "
                                 "forecaster's MSE and MAE on a series");
  add_model_options(sub, a->model, /*weights_required=*/true);
  sub->add_option("--data,-d", a->data, "fashion-mnist, long-range (synthetic; docs/compare.md), listops[-N] (sequences; "
                  "docs/sequences.md), co2, sunspots or csv:PATH[:val] (forecasting), a folder of IDX files, or an "
                  "image folder")->required();
  sub->add_option("--split", a->split, "eval (test/val data) or train")->capture_default_str()->check(
      CLI::IsMember({"eval", "train"}));
  sub->add_option("--batch,-b", a->batch, "batch size")->capture_default_str();
  sub->add_option("--workers", a->workers, "data-loading threads")->capture_default_str();
  sub->callback([a] {
    check_weights_given(a->model);
    const std::string weights = weights_file(a->model);
    MetaFormerConfig config = resolve_config(a->model);
    DataSplits splits = open_data_for(a->data, config);
    if (config.head.type == "forecast") {
      ModelArgs m = a->model;
      m.config_override = config;
      m.weights = weights;
      m.pretrained = false;
      LoadedModel lm = load_model(m);
      const Dataset& data = a->split == "train" ? *splits.train : *splits.eval;
      const ForecastEvalResult r = evaluate_forecast(*lm.model, *lm.backend, data, a->batch, a->workers);
      fmt::print("{}: {} windows, MSE {:.4f}, MAE {:.4f} (standardised with the training part's statistics)\n",
                 data.describe(), r.count, r.mse, r.mae);
      if (r.nonfinite)
        fmt::print(stderr, "warning: {} of {} windows had non-finite forecasts; the MSE is {}\n", r.nonfinite, r.count,
                   r.mse);
      return;
    }
    // Accuracy means something only over the data's classes: a checkpoint whose classifier has
    // another size (ImageNet weights on Fashion-MNIST) is refused, not evaluated 1000-way.
    // (`train --weights` instead re-initialises such a head and fine-tunes it.)
    const int weight_classes = checkpoint_num_classes(SafeTensors::open(weights));
    MF_CHECK(weight_classes == 0 || weight_classes == config.num_classes,
             "{}: its classifier has {} classes but {} has {}; eval needs weights trained on this data's classes "
             "(`train --weights` fine-tunes them to it)",
             weights, weight_classes, a->data, config.num_classes);
    ModelArgs m = a->model;
    m.config_override = config;
    m.weights = weights;  // fetched once
    m.pretrained = false;
    LoadedModel lm = load_model(m);
    const Dataset& data = a->split == "train" ? *splits.train : *splits.eval;
    for (const auto& line : data.skipped_files()) fmt::print(stderr, "skipped an unreadable file: {}\n", line);
    const EvalResult r = evaluate(*lm.model, *lm.backend, data, a->batch, a->workers);
    fmt::print("{}: {} samples, top-1 {:.2f}%, top-5 {:.2f}%, loss {:.4f}{}\n", data.describe(), r.count,
               100 * r.top1, 100 * r.top5, r.loss,
               r.skipped ? fmt::format(" ({} unreadable samples skipped)", r.skipped) : "");
    for (const auto& line : r.skipped_messages) fmt::print(stderr, "skipped an unreadable sample: {}\n", line);
    if (const std::string w = nonfinite_warning(r); !w.empty()) fmt::print(stderr, "{}\n", w);
  });
}

}  // namespace mf::cli
