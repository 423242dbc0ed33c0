// Fixtures shared by the training tests: a small IDX dataset, a small image folder, the model
// description they train, reading a run's metrics.jsonl, and killing a run to resume it.
#pragma once

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace mf::test {

inline const std::string kConfig = source_path("configs/fmnist_convformer.json");

// A small IDX dataset: `n` 28×28 images with a clear class signal (class k lights row band k).
inline void write_idx_dataset(const std::string& dir, int n_train, int n_test, bool truncate_images = false,
                              int label_count_delta = 0) {
  std::filesystem::create_directories(dir);
  auto write = [](const std::string& path, const std::vector<uint8_t>& header_dims_and_data) {
    write_bytes(path, header_dims_and_data);
  };
  auto images = [&](int n) {
    std::vector<uint8_t> b{0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 28};
    b[4] = static_cast<uint8_t>(n >> 24), b[5] = static_cast<uint8_t>(n >> 16), b[6] = static_cast<uint8_t>(n >> 8),
    b[7] = static_cast<uint8_t>(n);
    for (int i = 0; i < n; ++i)
      for (int p = 0; p < 28 * 28; ++p) {
        const int row = p / 28;
        b.push_back(static_cast<uint8_t>((row / 3 == i % 10 ? 200 : 20) + (i * 7 + p) % 13));
      }
    return b;
  };
  auto labels = [&](int n, int count) {
    std::vector<uint8_t> b{0, 0, 8, 1, 0, 0, 0, 0};
    b[4] = static_cast<uint8_t>(count >> 24), b[5] = static_cast<uint8_t>(count >> 16),
    b[6] = static_cast<uint8_t>(count >> 8), b[7] = static_cast<uint8_t>(count);
    for (int i = 0; i < count; ++i) b.push_back(static_cast<uint8_t>(i % 10));
    return b;
  };
  auto train_images = images(n_train);
  if (truncate_images) train_images.resize(train_images.size() - 100);
  write(dir + "/train-images-idx3-ubyte", train_images);
  write(dir + "/train-labels-idx1-ubyte", labels(n_train, n_train + label_count_delta));
  write(dir + "/t10k-images-idx3-ubyte", images(n_test));
  write(dir + "/t10k-labels-idx1-ubyte", labels(n_test, n_test));
}

inline std::vector<nlohmann::json> metrics(const std::string& run) {
  std::vector<nlohmann::json> rows;
  std::ifstream f(run + "/metrics.jsonl");
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// The kill-and-resume check of the training tests (CPU and GPU): `args` (a train command writing
// into `run`) is run with MF_DEBUG_KILL_AT_STEP=`step`, must die by SIGKILL there, and is resumed with
// `train --resume run` plus `resume_extra`; returns the resume's result for the caller's checks.
inline CliResult kill_at_step_then_resume(const std::vector<std::string>& args, const std::string& run, int step,
                                          const std::vector<std::string>& resume_extra = {}) {
  setenv("MF_DEBUG_KILL_AT_STEP", std::to_string(step).c_str(), 1);
  CliResult killed = run_cli(args);
  unsetenv("MF_DEBUG_KILL_AT_STEP");
  EXPECT_EQ(killed.exit_code, 128 + SIGKILL) << killed.err;
  std::vector<std::string> resume{"train", "--resume", run, "--no-progress"};
  resume.insert(resume.end(), resume_extra.begin(), resume_extra.end());
  return run_cli(resume);
}

// An image folder with two classes of small PNGs (from the test fixtures).
inline void write_image_folder(const std::string& dir, int per_class) {
  const auto png = read_bytes(data_path("image/photo.png"));
  const auto grey = read_bytes(data_path("image/grey.png"));
  for (const char* cls : {"cats", "dogs"}) {
    std::filesystem::create_directories(dir + "/" + cls);
    for (int i = 0; i < per_class; ++i)
      write_bytes(dir + "/" + cls + "/" + std::to_string(i) + ".png", std::string(cls) == "cats" ? png : grey);
  }
}

}  // namespace mf::test
