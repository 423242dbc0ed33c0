#include "data/batch_mix.h"

#include <algorithm>
#include <cmath>

namespace mf {

void mix_images_into(const float* x, int64_t B, int64_t H, int64_t W, int64_t C, const MixPlan& p, float* y) {
  const int64_t per = H * W * C;
  if (p.mode != MixPlan::Mode::blend) std::copy_n(x, B * per, y);
  if (p.mode == MixPlan::Mode::box) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r = p.y0; r < p.y1; ++r)
        std::copy_n(x + (B - 1 - b) * per + (r * W + p.x0) * C, (p.x1 - p.x0) * C, y + b * per + (r * W + p.x0) * C);
  } else if (p.mode == MixPlan::Mode::blend) {
    // std::fma, not a * keep + b * take: the build contracts at will (-ffp-contract=fast), and the
    // GPU kernel must round exactly as this does.
    for (int64_t b = 0; b < B; ++b) {
      const float* own = x + b * per;
      const float* partner = x + (B - 1 - b) * per;
      float* out = y + b * per;
      for (int64_t i = 0; i < per; ++i) out[i] = std::fma(own[i], p.keep, partner[i] * p.take);
    }
  }
}

}  // namespace mf
