// GoogleTest expectations about a run of the `metaformer` binary (test_util.h's run_cli).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "test_util.h"

namespace mf::test {

// One line of text on stderr that contains `phrase`, and a failing exit code (not a signal).
inline void expect_clean_failure(const CliResult& r, const std::string& phrase) {
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_LT(r.exit_code, 128) << "killed by a signal: " << r.err;
  EXPECT_NE(r.err.find(phrase), std::string::npos) << "stderr: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr: " << r.err;
}

}  // namespace mf::test
