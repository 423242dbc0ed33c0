#include "train/forecast.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/metaformer.h"
#include "train/optimizer.h"

namespace mf {

namespace {
void check_pair(const Tensor& pred, const Tensor& target) {
  MF_CHECK(pred.shape() == target.shape(), "a forecast {} and its target {} differ in shape", pred.shape().str(),
           target.shape().str());
  MF_CHECK(pred.device() == Device::CPU && target.device() == Device::CPU, "forecast losses are computed on the host");
}
}  // namespace

double forecast_mse(const Tensor& pred, const Tensor& target, Tensor& dpred) {
  check_pair(pred, target);
  dpred = Tensor::empty(pred.shape());
  const double n = static_cast<double>(pred.numel());
  double sum = 0;
  for (int64_t i = 0; i < pred.numel(); ++i) {
    const double d = static_cast<double>(pred.data()[i]) - target.data()[i];
    sum += d * d;
    dpred.data()[i] = static_cast<float>(2 * d / n);
  }
  return sum / n;
}

double forecast_mae(const Tensor& pred, const Tensor& target) {
  check_pair(pred, target);
  double sum = 0;
  for (int64_t i = 0; i < pred.numel(); ++i) sum += std::fabs(static_cast<double>(pred.data()[i]) - target.data()[i]);
  return sum / static_cast<double>(pred.numel());
}

ForecastWindows forecast_windows(const Tensor& series, int64_t context, int64_t horizon, int64_t stride) {
  MF_CHECK(series.ndim() == 2, "a series to cut into windows is [steps, channels]; got {}", series.shape().str());
  MF_CHECK(context >= 1 && horizon >= 1 && stride >= 1, "forecast windows need positive context, horizon and stride");
  const int64_t T = series.dim(0), C = series.dim(1);
  MF_CHECK(T >= context + horizon, "a series of {} steps is too short for one window of {} context + {} future steps",
           T, context, horizon);
  const int64_t n = (T - context - horizon) / stride + 1;
  ForecastWindows w{Tensor::empty({n, 1, context, C}), Tensor::empty({n, horizon, C})};
  for (int64_t i = 0; i < n; ++i) {
    const float* s = series.data() + i * stride * C;
    std::copy_n(s, context * C, w.context.data() + i * context * C);
    std::copy_n(s + context * C, horizon * C, w.future.data() + i * horizon * C);
  }
  return w;
}

double forecast_train_step(MetaFormer& model, AdamW& optimizer, Ctx& ctx, const Tensor& context,
                           const Tensor& future, double lr) {
  MF_CHECK(model.config().head.type == "forecast", "model {} has no forecast head (head.type 'forecast')",
           model.config().name);
  ctx.training = true;
  optimizer.zero_grad();
  Tensor dpred;
  const double loss = forecast_mse(model.run(ctx, context).to(Device::CPU), future, dpred);
  MF_CHECK(std::isfinite(loss), "the forecast loss diverged (it is {}); try a lower learning rate", loss);
  model.backward(ctx, dpred);
  optimizer.step(lr);
  return loss;
}

}  // namespace mf
