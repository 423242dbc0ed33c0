// The training loop: MetaFormer's recipe (AdamW with timm's weight-decay groups, linear warm-up then
// cosine decay per step, label-smoothing cross-entropy, stochastic depth, optional gradient
// clipping, Mixup/CutMix and weight EMA), evaluation and a checkpoint after every epoch, metrics in
// RUN_DIR/metrics.jsonl and curves in RUN_DIR/curves.svg.
//
// Determinism: the data order, every augmentation, drop-path mask and mixup draw is a function of
// the seed and the position in training, and every kernel reduces in a fixed order for a given
// thread count. Two runs with the same options and --threads therefore produce identical weights,
// and a run killed and resumed from its last checkpoint ends bit for bit where an uninterrupted run
// would (tests/test_train.cpp checks both).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "data/dataset.h"
#include "model/config.h"
#include "train/mixup.h"

namespace mf {

class Backend;
class MetaFormer;

struct TrainOptions {
  int epochs = 10;
  int64_t batch = 128;
  double lr = 2e-3;
  double min_lr = 1e-5;
  double warmup_lr = 1e-6;
  double warmup_epochs = 1;
  double weight_decay = 0.05;
  double label_smoothing = 0.1;
  double drop_path = -1;   // < 0: the model description's drop_path_rate
  double clip_grad = 0;    // max global gradient norm; 0: no clipping
  double mixup = 0, cutmix = 0, mix_prob = 1.0, mix_switch_prob = 0.5;
  double ema_decay = 0;    // 0: no EMA
  uint64_t seed = 0;
  int workers = 2;         // data-loading threads
  int64_t subset = 0;      // use only this many training samples (0: all)
  int64_t eval_subset = 0;
  int64_t eval_batch = 256;
  int64_t max_steps = 0;   // stop after this many optimizer steps in total (0: all epochs)
  int keep_checkpoints = 2;
  std::string backend = "cpu";
  // The cuda backend's fp32 matrix products: "fp32" (exact), "tf32" or "bf16" (tensor cores;
  // set_gpu_matmul). Storage, norms and the optimizer stay fp32.
  std::string matmul = "fp32";
  // The activations' storage on the cuda backend: "fp32", or "bf16" (autocast's mixed precision:
  // activations and their gradients stored in bf16, products in bf16 with fp32 accumulation; the
  // weights, their gradients, AdamW's moments, norm statistics and the loss stay fp32; docs/cuda.md).
  // May change on resume.
  std::string dtype = "fp32";
  // How gradients travel between the ranks of a data-parallel run: "fp32", or "bf16" (half the
  // bytes; docs/distributed.md). May change on resume, as the backend may.
  std::string allreduce = "fp32";
  // Gradient buckets of this many MiB are averaged across the ranks while the backward pass goes on
  // (train/grad_buckets.h); 0: one all-reduce after it. fp32 all-reduce only. May change on resume.
  double bucket_mb = 25;
  int threads = 0;
  bool progress = true;    // progress bar on stderr
  bool profile = false;    // print the time per op family after each epoch
  std::string data;        // what --data named (recorded for --resume)
  // --trace DIR: the initial weights and every step's lr, loss and batch, for replaying the run in
  // another framework (train/step_trace.h). A diagnostic: not recorded, not compared on resume.
  std::string trace;

  nlohmann::json to_json() const;
  static TrainOptions from_json(const nlohmann::json& j);
};

struct TrainSummary {
  int epochs_done = 0;
  int64_t steps = 0;
  double last_top1 = 0, last_top5 = 0, best_top1 = 0;
  // Forecasters (head "forecast", trained on a forecasting task with the MSE loss): test MSE and MAE
  // after the last epoch, and the lowest test MSE of any epoch.
  bool forecast = false;
  double last_mse = 0, last_mae = 0, best_mse = 0;
  double seconds = 0;
};

// Trains `config` on `data` into `run_dir`. With `resume`, continues from run_dir's latest
// checkpoint (its description and options are read from run_dir). `init_weights` (fine-tuning)
// loads a checkpoint first, re-initialising a classifier whose size differs.
// Training runs every op's backward pass on the backend: a model with an op that has none there is
// refused in one line naming the op (train() checks before it writes anything; compare checks
// every candidate before the first run).
void check_backward_ops(const MetaFormer& model, const Backend& backend);

TrainSummary train(MetaFormerConfig config, const TrainOptions& options, const DataSplits& data,
                   const std::string& run_dir, bool resume, const std::string& init_weights = "");

}  // namespace mf
