// The skip every GPU test starts with: a build without the CUDA backend, or a machine without a GPU,
// reports the test as skipped (never passed), with the reason.
#pragma once

#include <gtest/gtest.h>

#include "ops/backend.h"

#define MF_REQUIRE_GPU()                                                                  \
  do {                                                                                    \
    if (!::mf::built_with_cuda()) GTEST_SKIP() << "this build has no CUDA backend";       \
    if (::mf::gpu_count() == 0) GTEST_SKIP() << "no CUDA GPU on this machine";            \
  } while (0)
