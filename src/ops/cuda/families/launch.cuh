// What every kernel file of families/ uses (device side; not part of family_kernels.h): the launch
// helpers and fixed-order sums of ../backward_common.cuh, the element type of a T (DevT<T>::type:
// float, or CUDA's bf16 for the public bf16), and family_math.h's narrowing store.
#pragma once

#include "ops/cuda/backward_common.cuh"
#include "ops/cuda/families/family_kernels.h"

namespace mf::cuda::families {

using backward::detail::block_sum;
using backward::detail::blocks_for;
using backward::detail::column_sums;
using backward::detail::column_work;
using backward::detail::DevT;
using backward::detail::dptr;
using backward::detail::group_sums;
using backward::detail::group_work;
using backward::detail::kThreads;
using math::narrow;

}  // namespace mf::cuda::families
