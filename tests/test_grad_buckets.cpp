// Gradient buckets (train/grad_buckets.h): during a real backward pass of a small MetaFormer, every
// range handed out for averaging must already hold its final gradients, and the ranges of a step
// must tile the flat buffer exactly once. The mpirun tests (test_distributed.cpp) check the averaged
// training itself.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/rng.h"
#include "model/config.h"
#include "model/metaformer.h"
#include "ops/backend.h"
#include "ops/ops.h"
#include "test_util.h"
#include "train/grad_buckets.h"
#include "train/optimizer.h"

namespace mf::test {
namespace {

struct Handed {
  int64_t offset, count;
  std::vector<float> values;  // the range as it was when handed out
};

// One training step of configs/fmnist_convformer.json (0.69 M parameters) with buckets of
// `bucket_elements`; returns the ranges handed out, and the final gradients in `flat_after`.
std::vector<Handed> one_step(int64_t bucket_elements, std::vector<float>& flat_after, int64_t& total) {
  MetaFormer model(load_config(source_path("configs/fmnist_convformer.json")));
  initialize_parameters(model, 7);
  AdamW opt(model, {});
  opt.zero_grad();
  Tensor& flat = opt.flat_gradients();
  total = flat.numel();
  std::vector<Handed> handed;
  GradientBuckets buckets(model.named_parameters(), flat, bucket_elements, [&](int64_t offset, int64_t count) {
    handed.push_back({offset, count, std::vector<float>(flat.data() + offset, flat.data() + offset + count)});
  });
  buckets.begin_step();
  Rng rng(3);
  Tensor x = Tensor::empty({4, 28, 28, 1});
  for (float& v : x.span()) v = 2.f * rng.uniform() - 1.f;
  Tensor target = Tensor::zeros({4, 10});
  for (int b = 0; b < 4; ++b) target.data()[b * 10 + b] = 1.f;
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  ctx.training = true;
  ctx.rng = &rng;
  ctx.on_backward_done = [&](const Module& m) { buckets.module_done(m); };
  Tensor dlogits;
  op::cross_entropy(ctx.exec, model.run(ctx, x), target, dlogits);
  model.backward(ctx, dlogits);
  buckets.finish();
  flat_after.assign(flat.data(), flat.data() + total);
  return handed;
}

TEST(GradientBuckets, RangesAreFinalWhenHandedOutAndTileTheBuffer) {
  for (int64_t bucket : {int64_t{1}, int64_t{20000}, int64_t{1} << 40}) {
    SCOPED_TRACE(bucket);
    std::vector<float> after;
    int64_t total = 0;
    const std::vector<Handed> handed = one_step(bucket, after, total);
    ASSERT_FALSE(handed.empty());
    // From the end of the buffer down to 0, without gaps or overlaps.
    int64_t end = total;
    for (const Handed& h : handed) {
      EXPECT_EQ(h.offset + h.count, end);
      EXPECT_GT(h.count, 0);
      end = h.offset;
      // Final when handed out: nothing the rest of the backward pass did changed it.
      EXPECT_EQ(std::memcmp(h.values.data(), after.data() + h.offset, sizeof(float) * h.values.size()), 0)
          << "range [" << h.offset << ", " << h.offset + h.count << ") changed after it was handed out";
    }
    EXPECT_EQ(end, 0);
    if (bucket == 1) {
      // Every block, stage and the head start their own bucket during the backward pass; only the
      // stem's (the first parameters) waits for finish().
      EXPECT_GT(handed.size(), 8u);
    }
    if (bucket == (int64_t{1} << 40)) {
      EXPECT_EQ(handed.size(), 1u);  // all at finish()
    }
  }
}

}  // namespace
}  // namespace mf::test
