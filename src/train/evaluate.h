// Accuracy and loss of a model on a dataset (evaluation transform, no augmentation).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "model/metaformer.h"

namespace mf {

struct EvalResult {
  double loss = 0;  // mean cross-entropy (no label smoothing); NaN or Inf when any sample's is
  double top1 = 0;  // fractions in [0, 1]
  double top5 = 0;
  int64_t count = 0;      // samples evaluated
  int64_t skipped = 0;    // unreadable samples left out
  std::vector<std::string> skipped_messages;  // one line each, naming the file and the reason
  int64_t nonfinite = 0;  // samples with a NaN or Inf logit: counted as wrong (a diverged model must show)
};

// 0-based rank of class `target` in one row of logits, as torch.topk and argmax order the classes:
// by score, descending, a tie going to the lower class index. -1 when any logit of the row is NaN
// or infinite: such a prediction is wrong at every k.
int64_t target_rank(std::span<const float> logits, int64_t target);

// With world > 1, only this rank's share of the samples (LoaderOptions::rank): the trainer sums the
// ranks' results (docs/distributed.md).
EvalResult evaluate(MetaFormer& model, Backend& backend, const Dataset& data, int64_t batch, int workers,
                    int64_t subset = 0, int rank = 0, int world = 1);

// Forecasting (docs/sequences.md): mean squared and absolute error of the forecasts against the
// windows' futures, over every step and channel, in float64. A window whose forecast has a NaN or Inf
// is counted in `nonfinite`, and then mse and mae are NaN (a diverged model must show).
struct ForecastEvalResult {
  double mse = 0, mae = 0;
  int64_t count = 0;      // windows evaluated
  int64_t nonfinite = 0;
};
ForecastEvalResult evaluate_forecast(MetaFormer& model, Backend& backend, const Dataset& data, int64_t batch,
                                     int workers, int64_t subset = 0, int rank = 0, int world = 1);

// Data parallelism: the results of each rank's share (rank, world above) summed over the ranks, on
// every rank: counts added, means weighted by their counts. Unchanged in a world of one.
class Distributed;
EvalResult sum_over_ranks(const Distributed& dist, EvalResult r);
ForecastEvalResult sum_over_ranks(const Distributed& dist, ForecastEvalResult r);

// "warning: 12 of 10000 samples had non-finite logits (counted as wrong); the loss is nan" or "" when
// every logit and the loss are finite.
std::string nonfinite_warning(const EvalResult& r);

}  // namespace mf
