// Forecasting with a series model (docs/sequences.md): the model's "forecast" head maps a context
// window to the next `horizon` steps, [B, horizon, in_chans], and training minimises the mean squared
// error against the true future (PatchTSMixerForPrediction's loss "mse").
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "nn/module.h"

namespace mf {

class MetaFormer;
class AdamW;

// mean((pred - target)²) over every element; d(loss)/d(pred) into dpred. Shapes must agree.
double forecast_mse(const Tensor& pred, const Tensor& target, Tensor& dpred);
// mean(|pred - target|)
double forecast_mae(const Tensor& pred, const Tensor& target);

// Sliding windows over a series [T, C]: window i starts at step i · stride; its context is `context`
// steps as a model input [N, 1, context, C] (channels-last) and its future the next `horizon` steps,
// [N, horizon, C]. A series too short for one window is an error.
struct ForecastWindows {
  Tensor context, future;
};
ForecastWindows forecast_windows(const Tensor& series, int64_t context, int64_t horizon, int64_t stride = 1);

// One training step: forward (ctx.training set), MSE, backward, AdamW step at `lr`. Returns the
// loss before the step.
double forecast_train_step(MetaFormer& model, AdamW& optimizer, Ctx& ctx, const Tensor& context,
                           const Tensor& future, double lr);

}  // namespace mf
