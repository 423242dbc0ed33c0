// Inference hands activations down (Module::run_owned, docs/design.md "Memory"): a module's input is
// freed once nothing reads it, not when its caller returns. Measured with the host BufferPool's
// bytes in use, which every CPU tensor comes from.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/buffer_pool.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "nn/sequential.h"
#include "ops/backend.h"
#include "ops/ops.h"
#include "test_util.h"

namespace mf::test {
namespace {

// Writes a fresh output of the input's shape; records the host bytes in use when it starts.
class Probe : public Module {
 public:
  explicit Probe(size_t* in_use_at_start) : in_use_at_start_(in_use_at_start) {}
  std::string kind() const override { return "Probe"; }
  Tensor forward(Ctx&, const Tensor& x) override {
    if (in_use_at_start_) *in_use_at_start_ = BufferPool::host().bytes_in_use();
    return Tensor::full(x.shape(), 1.f);
  }

 private:
  size_t* in_use_at_start_;
};

// A Sequential given its input keeps no reference to it: once the first child has returned, the
// input is gone unless the caller kept it.
TEST(Handover, SequentialGivesEachChildItsInput) {
  size_t at_second = 0;
  Sequential seq;
  seq.append(std::make_unique<Probe>(nullptr));
  seq.append(std::make_unique<Probe>(&at_second));
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  const Shape shape{64, 1024};
  const size_t bytes = BufferPool::size_class(sizeof(float) * 64 * 1024);

  const size_t base = BufferPool::host().bytes_in_use();
  Tensor kept = Tensor::full(shape, 0.f);
  seq.run(ctx, kept);
  EXPECT_EQ(at_second - base, 2 * bytes) << "run: the caller's input and the first output are alive";
  kept = Tensor();

  ASSERT_EQ(BufferPool::host().bytes_in_use(), base);
  Tensor given = Tensor::full(shape, 0.f);
  seq.run_owned(ctx, std::move(given));
  EXPECT_EQ(at_second - base, bytes) << "run_owned: the input was held past the first child";
}

// A hierarchical MetaFormer in inference: when stage 0's first block reports its output, the stem's
// output (that block's input) is gone; before, MetaFormer::forward held it through stage 0.
TEST(Handover, TheStemOutputIsFreedInsideTheFirstBlock) {
  const std::string dir = data_path("golden/poolformer");
  MetaFormer model(load_config(dir + "/config.json"));
  load_weights(model, SafeTensors::open(dir + "/weights.safetensors"));
  SafeTensors io = SafeTensors::open(dir + "/io.safetensors");
  const Tensor image = io.load("input");
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  int64_t stem_numel = 0;
  size_t at_block = 0;
  ctx.on_output = [&](const std::string& name, const Tensor& t) {
    if (name == "stem") stem_numel = t.numel();
    if (name == "stages.0.blocks.0") at_block = BufferPool::host().bytes_in_use();
  };
  const Tensor x = op::nchw_to_nhwc(ctx.exec, image);
  model.forward(ctx, x);  // fills the backend's caches
  const size_t activation = BufferPool::size_class(sizeof(float) * static_cast<size_t>(stem_numel));
  const size_t before = BufferPool::host().bytes_in_use();
  const Tensor logits = model.forward(ctx, x);
  // Live at that point: the block's output only (one activation of stage 0); with the stem's output
  // held, two.
  EXPECT_LT(at_block - before, activation + activation / 2)
      << "bytes in use grew by " << at_block - before << " with stage-0 activations of " << activation;
  EXPECT_EQ(logits.dim(1), model.config().num_classes);
}

// A backend that does not allow it (the CPU's) runs op::mlp_branch_ as op::mlp_branch: a new output,
// the same values, the input untouched.
TEST(Handover, MlpBranchOverItsInputFallsBackWhereTheBackendSaysNo) {
  Exec cpu{&get_backend("cpu"), nullptr};
  ASSERT_FALSE(cpu.backend->mlp_branch_in_place({}));
  const Tensor x = random_tensor({2, 5, 6, 16}, 3);
  const Tensor w1 = random_tensor({64, 16}, 4), w2 = random_tensor({16, 64}, 5), nw = random_tensor({16}, 6);
  const BranchNorm norm{BranchNorm::Type::layer_norm, &nw, nullptr, 1e-5f};
  const Activation gelu{ActKind::GELU};
  const Tensor want = op::mlp_branch(cpu, x, norm, w1, nullptr, gelu, w2, nullptr, {});
  Tensor mine = x.clone();
  const void* at = mine.raw();
  const Tensor got = op::mlp_branch_(cpu, std::move(mine), norm, w1, nullptr, gelu, w2, nullptr, {});
  EXPECT_NE(got.raw(), at);
  EXPECT_EQ(std::memcmp(got.data(), want.data(), sizeof(float) * want.numel()), 0);
}

}  // namespace
}  // namespace mf::test
