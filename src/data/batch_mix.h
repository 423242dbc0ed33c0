// Mixup and CutMix's image half, as a plan the trainer draws on the host (train/mixup.h) and a
// function of the images that the host and the backends (op::mix_images) compute with the same
// arithmetic, so that mixing on the GPU gives the host's bits.
#pragma once

#include <cstdint>

namespace mf {

// What Mixup or CutMix does to one batch's images. Sample b is mixed with
// sample B − 1 − b: blended, y = fma(x_b, keep, x_partner · take), or, inside the box [y0, y1) ×
// [x0, x1), replaced by the partner's pixels. The images' own arithmetic is exactly this, on the
// host (mix_images_into) and in the backends (op::mix_images), so the two give the same bits.
struct MixPlan {
  enum class Mode { none, blend, box };
  Mode mode = Mode::none;
  float keep = 1.0f, take = 0.0f;  // blend: the weights of the sample and of its partner
  int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;  // box
  double lambda = 1.0;                // the targets' weight of the sample's own label
};
// y [B, H, W, C] = the plan applied to x [B, H, W, C] (host fp32; y must not alias x).
void mix_images_into(const float* x, int64_t B, int64_t H, int64_t W, int64_t C, const MixPlan& p, float* y);

}  // namespace mf
