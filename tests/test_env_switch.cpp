// env_choice (core/env_switch.h): the kernel-variant switches' parser.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "core/env_switch.h"

namespace {

constexpr const char* kVar = "METAFORMER_TEST_ENV_SWITCH";

TEST(EnvSwitch, UnsetOrEmptyIsTheDefault) {
  unsetenv(kVar);
  EXPECT_EQ(mf::env_choice(kVar, {"a", "b"}), -1);
  setenv(kVar, "", 1);
  EXPECT_EQ(mf::env_choice(kVar, {"a", "b"}), -1);
  unsetenv(kVar);
}

TEST(EnvSwitch, AChoiceGivesItsIndex) {
  setenv(kVar, "batch", 1);
  EXPECT_EQ(mf::env_choice(kVar, {"strip", "tiled1", "batch"}), 2);
  setenv(kVar, "strip", 1);
  EXPECT_EQ(mf::env_choice(kVar, {"strip", "tiled1", "batch"}), 0);
  unsetenv(kVar);
}

TEST(EnvSwitch, AnUnknownValueWarnsOnceNamingTheChoicesAndGivesTheDefault) {
  setenv(kVar, "bacth", 1);
  testing::internal::CaptureStderr();
  EXPECT_EQ(mf::env_choice(kVar, {"strip", "batch"}), -1);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, std::string("metaformer: warning: ") + kVar + "=bacth is none of strip, batch; the default runs\n");
  setenv(kVar, "Batch", 1);  // case matters: a near miss is a miss
  testing::internal::CaptureStderr();
  EXPECT_EQ(mf::env_choice(kVar, {"strip", "batch"}), -1);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("Batch is none of"), std::string::npos);
  unsetenv(kVar);
}

}  // namespace
