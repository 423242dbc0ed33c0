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

// A switch read on every step (METAFORMER_CUDA_ADAMW_COPIES) warns once, not once a read.
TEST(EnvSwitch, AnUnknownValueReadAgainDoesNotWarnAgain) {
  setenv(kVar, "twice", 1);
  testing::internal::CaptureStderr();
  for (int read = 0; read < 3; ++read) EXPECT_EQ(mf::env_choice(kVar, {"strip", "batch"}), -1);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, std::string("metaformer: warning: ") + kVar + "=twice is none of strip, batch; the default runs\n");
  unsetenv(kVar);
}

// The in-process override a kernel benchmark sets (bench/cuda_dev): a choice sets its index, null or
// "" clears it, an unknown name is refused and changes nothing.
TEST(EnvSwitch, AnOverrideTakesAChoiceClearsAndRefusesUnknownNames) {
  const char* const choices[] = {"tiled", "batch", "wide"};
  std::atomic<int> override_index{-1};
  EXPECT_TRUE(mf::set_switch_override(override_index, "wide", choices, 3));
  EXPECT_EQ(override_index.load(), 2);
  EXPECT_FALSE(mf::set_switch_override(override_index, "wider", choices, 3));
  EXPECT_EQ(override_index.load(), 2);
  EXPECT_TRUE(mf::set_switch_override(override_index, nullptr, choices, 3));
  EXPECT_EQ(override_index.load(), -1);
  EXPECT_TRUE(mf::set_switch_override(override_index, "tiled", choices, 3));
  EXPECT_EQ(override_index.load(), 0);
  EXPECT_TRUE(mf::set_switch_override(override_index, "", choices, 3));
  EXPECT_EQ(override_index.load(), -1);
}

}  // namespace
