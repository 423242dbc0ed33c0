#include "train/evaluate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "data/loader.h"
#include "train/distributed.h"
#include "train/targets.h"

namespace mf {

namespace {
// Every sample once, in order, with the evaluation transform, the last batch possibly partial.
LoaderOptions evaluation_order(int64_t batch, int workers, int64_t subset, int rank, int world) {
  LoaderOptions o;
  o.rank = rank;
  o.world = world;
  o.batch = batch;
  o.train = false;
  o.shuffle = false;
  o.drop_last = false;
  o.workers = workers;
  o.subset = subset;
  return o;
}
}  // namespace

int64_t target_rank(std::span<const float> logits, int64_t target) {
  const float t = logits[static_cast<size_t>(target)];
  int64_t rank = 0;
  for (size_t k = 0; k < logits.size(); ++k) {
    const float l = logits[k];
    if (!std::isfinite(l)) return -1;
    // Ahead of the target: a higher score, or the same score at a lower index (torch.topk's order).
    rank += l > t || (l == t && static_cast<int64_t>(k) < target);
  }
  return rank;
}

std::string nonfinite_warning(const EvalResult& r) {
  if (r.nonfinite == 0 && std::isfinite(r.loss)) return "";
  return fmt::format("warning: {} of {} samples had non-finite logits (counted as wrong); the loss is {}",
                     r.nonfinite, r.count, r.loss);
}

EvalResult evaluate(MetaFormer& model, Backend& backend, const Dataset& data, int64_t batch, int workers,
                    int64_t subset, int rank, int world) {
  DataLoader loader(data, evaluation_order(batch, workers, subset, rank, world));
  Ctx ctx;
  ctx.exec.backend = &backend;
  // The loss and ranks are computed on the host from the logits brought back (a GPU backend has no
  // cross-entropy op; this is a tiny [B, K] computation).
  const Exec host{backend.device() == Device::CPU ? &backend : &get_backend("cpu"), nullptr};
  EvalResult r;
  double loss_sum = 0;
  int64_t top1 = 0, top5 = 0;
  while (auto b = loader.next()) {
    if (b->labels.empty()) continue;
    Tensor logits = model.run(ctx, b->images).to(Device::CPU);
    const int64_t K = logits.dim(1), B = logits.dim(0);
    Tensor dl;
    loss_sum += op::cross_entropy(host, logits, smoothed_targets(b->labels, K, 0.0), dl) * static_cast<double>(B);
    for (int64_t i = 0; i < B; ++i) {
      MF_CHECK(b->labels[static_cast<size_t>(i)] >= 0 && b->labels[static_cast<size_t>(i)] < K,
               "label {} is outside the classifier's {} classes", b->labels[static_cast<size_t>(i)], K);
      const int64_t rank = target_rank({logits.data() + i * K, static_cast<size_t>(K)}, b->labels[static_cast<size_t>(i)]);
      r.nonfinite += rank < 0;
      top1 += rank == 0;
      top5 += rank >= 0 && rank < 5;
    }
    r.count += B;
  }
  r.skipped_messages = loader.skipped();
  r.skipped = static_cast<int64_t>(r.skipped_messages.size());
  if (r.count) {
    r.loss = loss_sum / static_cast<double>(r.count);
    r.top1 = static_cast<double>(top1) / static_cast<double>(r.count);
    r.top5 = static_cast<double>(top5) / static_cast<double>(r.count);
  }
  return r;
}

ForecastEvalResult evaluate_forecast(MetaFormer& model, Backend& backend, const Dataset& data, int64_t batch,
                                     int workers, int64_t subset, int rank, int world) {
  MF_CHECK(data.horizon() > 0, "{} is not a forecasting task", data.describe());
  DataLoader loader(data, evaluation_order(batch, workers, subset, rank, world));
  Ctx ctx;
  ctx.exec.backend = &backend;
  ForecastEvalResult r;
  double se = 0, ae = 0;
  int64_t values = 0;
  while (auto b = loader.next()) {
    if (b->labels.empty()) continue;
    const Tensor pred = model.run(ctx, b->images).to(Device::CPU);
    MF_CHECK(pred.shape() == b->targets.shape(), "the model forecasts {} but the data's futures are {}",
             pred.shape().str(), b->targets.shape().str());
    const int64_t B = pred.dim(0), per = pred.numel() / std::max<int64_t>(B, 1);
    for (int64_t i = 0; i < B; ++i) {
      bool finite = true;
      for (int64_t k = 0; k < per; ++k) {
        const double d = static_cast<double>(pred.data()[i * per + k]) - b->targets.data()[i * per + k];
        finite = finite && std::isfinite(d);
        se += d * d;
        ae += std::fabs(d);
      }
      r.nonfinite += !finite;
    }
    values += pred.numel();
    r.count += B;
  }
  if (values) {
    r.mse = se / static_cast<double>(values);
    r.mae = ae / static_cast<double>(values);
  }
  return r;
}

EvalResult sum_over_ranks(const Distributed& dist, EvalResult r) {
  if (dist.world() == 1) return r;
  const auto count = static_cast<double>(r.count);
  double sums[6] = {r.loss * count, std::round(r.top1 * count), std::round(r.top5 * count), count,
                    static_cast<double>(r.skipped), static_cast<double>(r.nonfinite)};
  dist.allreduce_sum(sums, 6);
  r.count = static_cast<int64_t>(sums[3]);
  r.loss = r.count ? sums[0] / sums[3] : 0;
  r.top1 = r.count ? sums[1] / sums[3] : 0;
  r.top5 = r.count ? sums[2] / sums[3] : 0;
  r.skipped = static_cast<int64_t>(sums[4]);
  r.nonfinite = static_cast<int64_t>(sums[5]);
  return r;
}

ForecastEvalResult sum_over_ranks(const Distributed& dist, ForecastEvalResult r) {
  if (dist.world() == 1) return r;
  const auto count = static_cast<double>(r.count);
  // Every window has the same number of values, so the means weigh by windows.
  double sums[4] = {r.count ? r.mse * count : 0, r.count ? r.mae * count : 0, count, static_cast<double>(r.nonfinite)};
  dist.allreduce_sum(sums, 4);
  r.count = static_cast<int64_t>(sums[2]);
  r.mse = r.count ? sums[0] / sums[2] : 0;
  r.mae = r.count ? sums[1] / sums[2] : 0;
  r.nonfinite = static_cast<int64_t>(sums[3]);
  return r;
}

}  // namespace mf
