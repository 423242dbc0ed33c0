// Accuracy and loss of a model on a dataset (evaluation transform, no augmentation).
#pragma once

#include <cstdint>

#include "data/dataset.h"
#include "model/metaformer.h"

namespace mf {

struct EvalResult {
  double loss = 0;  // mean cross-entropy (no label smoothing)
  double top1 = 0;  // fractions in [0, 1]
  double top5 = 0;
  int64_t count = 0;    // samples evaluated
  int64_t skipped = 0;  // unreadable samples left out
};

EvalResult evaluate(MetaFormer& model, Backend& backend, const Dataset& data, int64_t batch, int workers,
                    int64_t subset = 0);

}  // namespace mf
