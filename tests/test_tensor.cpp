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

}  // namespace
