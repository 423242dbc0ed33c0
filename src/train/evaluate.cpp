#include "train/evaluate.h"

#include <algorithm>

#include "data/loader.h"
#include "train/targets.h"

namespace mf {

EvalResult evaluate(MetaFormer& model, Backend& backend, const Dataset& data, int64_t batch, int workers,
                    int64_t subset) {
  LoaderOptions o;
  o.batch = batch;
  o.train = false;
  o.shuffle = false;
  o.drop_last = false;
  o.workers = workers;
  o.subset = subset;
  DataLoader loader(data, o);
  Ctx ctx;
  ctx.exec.backend = &backend;
  EvalResult r;
  double loss_sum = 0;
  int64_t top1 = 0, top5 = 0;
  while (auto b = loader.next()) {
    if (b->labels.empty()) continue;
    Tensor logits = model.run(ctx, b->images);
    const int64_t K = logits.dim(1), B = logits.dim(0);
    Tensor dl;
    loss_sum += op::cross_entropy(ctx.exec, logits, smoothed_targets(b->labels, K, 0.0), dl) * static_cast<double>(B);
    for (int64_t i = 0; i < B; ++i) {
      const float* l = logits.data() + i * K;
      const float target = l[b->labels[static_cast<size_t>(i)]];
      // Rank of the true class: how many classes score strictly higher.
      int64_t higher = 0;
      for (int64_t k = 0; k < K; ++k) higher += l[k] > target;
      top1 += higher == 0;
      top5 += higher < 5;
    }
    r.count += B;
  }
  r.skipped = static_cast<int64_t>(loader.skipped().size());
  if (r.count) {
    r.loss = loss_sum / static_cast<double>(r.count);
    r.top1 = static_cast<double>(top1) / static_cast<double>(r.count);
    r.top5 = static_cast<double>(top5) / static_cast<double>(r.count);
  }
  return r;
}

}  // namespace mf
