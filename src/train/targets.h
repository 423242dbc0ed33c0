// Soft targets for the cross-entropy: label smoothing (and, with mixup, convex mixtures of them).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mf {

// [B, classes]: (1 - smoothing) on the label plus smoothing / classes everywhere, as
// torch.nn.CrossEntropyLoss(label_smoothing=...) and timm's mixup targets do.
Tensor smoothed_targets(const std::vector<int64_t>& labels, int64_t classes, double smoothing);

}  // namespace mf
