// Tensor's cache of derived values (core/tensor.h): a value belongs to the view it was made from.
// The GPU backend caches uploads, dtype conversions and weight layouts this way, and views of one
// storage (row slices of a batch) must not read each other's.
#include <gtest/gtest.h>

#include <memory>

#include "core/tensor.h"

namespace {

using mf::Tensor;

TEST(TensorDerived, BelongsToTheViewItWasMadeFrom) {
  Tensor t = Tensor::zeros({4, 3});
  t.set_derived("k", std::make_shared<int>(7));
  ASSERT_NE(t.derived("k"), nullptr);
  EXPECT_EQ(*std::static_pointer_cast<int>(t.derived("k")), 7);
  // A reshaped view (same elements) shares it.
  EXPECT_NE(t.reshape({12}).derived("k"), nullptr);
  // Row slices do not: neither one that starts elsewhere nor one that starts where t does.
  EXPECT_EQ(t.slice0(1, 3).derived("k"), nullptr);
  EXPECT_EQ(t.slice0(0, 2).derived("k"), nullptr);
  // A slice's own value is its own.
  Tensor head = t.slice0(0, 2);
  head.set_derived("k", std::make_shared<int>(8));
  EXPECT_EQ(*std::static_pointer_cast<int>(head.derived("k")), 8);
  EXPECT_EQ(t.derived("k"), nullptr);  // one value a key and storage: the slice's replaced t's
  // A change of the contents invalidates it.
  head.bump_version();
  EXPECT_EQ(head.derived("k"), nullptr);
}

// An update that rewrites a derived value with its tensor (the cuda AdamW step and a weight's bf16
// copy) finds it at any version, still only for its own view, and stamps it anew.
TEST(TensorDerived, AnyVersionFindsAStaleValueOfTheSameView) {
  Tensor t = Tensor::zeros({4, 3});
  t.set_derived("k", std::make_shared<int>(7));
  t.bump_version();
  EXPECT_EQ(t.derived("k"), nullptr);
  auto stale = t.derived_any_version("k");
  ASSERT_NE(stale, nullptr);
  EXPECT_EQ(*std::static_pointer_cast<int>(stale), 7);
  EXPECT_EQ(t.slice0(0, 2).derived_any_version("k"), nullptr);
  EXPECT_EQ(t.derived_any_version("other"), nullptr);
  t.set_derived("k", stale);
  EXPECT_NE(t.derived("k"), nullptr);
}

}  // namespace
