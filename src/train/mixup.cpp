#include "train/mixup.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "train/targets.h"

namespace mf {

namespace {

double sample_gamma(double a, Rng& rng) {
  if (a < 1.0) {  // Gamma(a) = Gamma(a + 1) · U^(1/a)
    const double u = std::max(1e-12, static_cast<double>(rng.uniform()));
    return sample_gamma(a + 1.0, rng) * std::pow(u, 1.0 / a);
  }
  const double d = a - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    double x, v;
    do {
      x = rng.normal();
      v = 1.0 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const double u = rng.uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (std::log(std::max(u, 1e-300)) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

}  // namespace

double sample_beta(double a, Rng& rng) {
  const double x = sample_gamma(a, rng), y = sample_gamma(a, rng);
  return x + y > 0 ? x / (x + y) : 0.5;
}

MixPlan draw_mix(int64_t H, int64_t W, const MixupOptions& o, Rng& rng) {
  MixPlan p;
  if (!o.enabled() || !(rng.uniform() < o.prob)) return p;
  bool cutmix = false;
  if (o.mixup_alpha > 0 && o.cutmix_alpha > 0) cutmix = rng.uniform() < o.switch_prob;
  else cutmix = o.cutmix_alpha > 0;
  const double lam = sample_beta(cutmix ? o.cutmix_alpha : o.mixup_alpha, rng);
  if (!(lam < 1.0)) return p;
  if (cutmix) {
    const double ratio = std::sqrt(1.0 - lam);
    const auto ch = static_cast<int64_t>(static_cast<double>(H) * ratio);
    const auto cw = static_cast<int64_t>(static_cast<double>(W) * ratio);
    const auto cy = static_cast<int64_t>(rng.below(static_cast<uint64_t>(H)));
    const auto cx = static_cast<int64_t>(rng.below(static_cast<uint64_t>(W)));
    p.mode = MixPlan::Mode::box;
    p.y0 = std::clamp<int64_t>(cy - ch / 2, 0, H), p.y1 = std::clamp<int64_t>(cy + ch / 2, 0, H);
    p.x0 = std::clamp<int64_t>(cx - cw / 2, 0, W), p.x1 = std::clamp<int64_t>(cx + cw / 2, 0, W);
    // λ corrected to the box's true area, as timm does
    p.lambda = 1.0 - static_cast<double>((p.y1 - p.y0) * (p.x1 - p.x0)) / static_cast<double>(H * W);
  } else {
    p.mode = MixPlan::Mode::blend;
    p.keep = static_cast<float>(lam), p.take = static_cast<float>(1.0 - lam);
    p.lambda = lam;
  }
  return p;
}

Tensor mix_targets(const std::vector<int64_t>& labels, int64_t classes, const MixupOptions& o, const MixPlan& p) {
  Tensor t1 = smoothed_targets(labels, classes, o.label_smoothing);
  if (p.mode == MixPlan::Mode::none) return t1;
  const std::vector<int64_t> flipped(labels.rbegin(), labels.rend());
  const Tensor t2 = smoothed_targets(flipped, classes, o.label_smoothing);
  for (int64_t i = 0; i < t1.numel(); ++i)
    t1.data()[i] = static_cast<float>(p.lambda * t1.data()[i] + (1.0 - p.lambda) * t2.data()[i]);
  return t1;
}

Tensor mix_batch(Tensor& images, const std::vector<int64_t>& labels, int64_t classes, const MixupOptions& o, Rng& rng,
                 double* lambda) {
  const int64_t B = images.dim(0), H = images.dim(1), W = images.dim(2), C = images.dim(3);
  MF_CHECK(static_cast<int64_t>(labels.size()) == B, "mixup: {} labels for {} images", labels.size(), B);
  const MixPlan p = draw_mix(H, W, o, rng);
  if (p.mode != MixPlan::Mode::none) {
    const Tensor src = images.clone();
    mix_images_into(src.data(), B, H, W, C, p, images.data());
  }
  if (lambda) *lambda = p.lambda;
  return mix_targets(labels, classes, o, p);
}

}  // namespace mf
