// Mixup and CutMix on a batch, as timm's Mixup in 'batch' mode: with probability `prob` the batch is
// mixed with itself reversed, either blended (mixup, λ ~ Beta(mixup_alpha)) or with a box pasted
// (cutmix, λ ~ Beta(cutmix_alpha), corrected to the box's true area); targets are the same mixture of
// the two label-smoothed one-hot targets.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "data/batch_mix.h"

namespace mf {

struct MixupOptions {
  double mixup_alpha = 0.0;   // 0: off
  double cutmix_alpha = 0.0;  // 0: off
  double prob = 1.0;          // probability of mixing a batch at all
  double switch_prob = 0.5;   // with both on: probability of cutmix rather than mixup
  double label_smoothing = 0.1;
  bool enabled() const { return mixup_alpha > 0 || cutmix_alpha > 0; }
};

// One batch's draw (data/batch_mix.h), from the generator in mix_batch's order, so that the
// generator then goes on the same whichever of the two (host or backend) mixes the images.
MixPlan draw_mix(int64_t H, int64_t W, const MixupOptions& o, Rng& rng);
// The plan's soft targets [B, classes]: λ · smoothed(labels) + (1 − λ) · smoothed(labels reversed).
Tensor mix_targets(const std::vector<int64_t>& labels, int64_t classes, const MixupOptions& o, const MixPlan& p);

// images [B, H, W, C] are mixed in place; returns the soft targets [B, classes] and λ.
Tensor mix_batch(Tensor& images, const std::vector<int64_t>& labels, int64_t classes, const MixupOptions& o, Rng& rng,
                 double* lambda = nullptr);

// A sample of Beta(a, a) (via two Gamma(a) draws, Marsaglia & Tsang).
double sample_beta(double a, Rng& rng);

}  // namespace mf
