// Learning-rate schedule: linear warm-up from warmup_lr to lr, then cosine decay to min_lr, per step.
#pragma once

#include <cstdint>

namespace mf {

struct LrSchedule {
  double lr = 1e-3;
  double min_lr = 1e-5;
  double warmup_lr = 1e-6;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  double at(int64_t step) const;
};

}  // namespace mf
