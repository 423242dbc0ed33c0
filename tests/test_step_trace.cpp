// `train --trace DIR` (the initial weights and every step's lr, loss and batch, for replaying a run in
// PyTorch: bench/loss_curve_vs_torch.py) and "fashion-mnist:N" (Fashion-MNIST resized to N×N).
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "train_fixtures.h"

namespace mf::test {
namespace {

namespace fs = std::filesystem;

struct TraceStep {
  int64_t step = 0;
  double lr = 0, loss = 0;
  int64_t dims[4] = {};
  std::vector<float> images;
  std::vector<int64_t> labels;
};

// Reads steps.bin as the format in train/step_trace.h says.
std::vector<TraceStep> read_trace(const std::string& path) {
  const std::vector<uint8_t> bytes = read_bytes(path);
  EXPECT_GE(bytes.size(), 8u);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 8), "MFTRACE1");
  std::vector<TraceStep> steps;
  size_t at = 8;
  auto take = [&](void* dst, size_t n) {
    if (at + n > bytes.size()) throw std::runtime_error("truncated trace");
    std::memcpy(dst, bytes.data() + at, n);
    at += n;
  };
  while (at < bytes.size()) {
    TraceStep s;
    take(&s.step, 8);
    take(&s.lr, 8);
    take(&s.loss, 8);
    take(s.dims, 32);
    s.images.resize(static_cast<size_t>(s.dims[0] * s.dims[1] * s.dims[2] * s.dims[3]));
    take(s.images.data(), s.images.size() * 4);
    s.labels.resize(static_cast<size_t>(s.dims[0]));
    take(s.labels.data(), s.labels.size() * 8);
    steps.push_back(std::move(s));
  }
  return steps;
}

std::vector<std::string> trace_args(const std::string& data, const std::string& out, const std::string& trace) {
  return {"train", "--config", kConfig, "--data", data, "--epochs", "1", "--max-steps", "3", "--batch", "16",
          "--lr", "3e-3", "--out", out, "--threads", "2", "--workers", "2", "--no-progress", "--seed", "3",
          "--drop-path", "0", "--trace", trace};
}

TEST(StepTrace, RecordsTheInitialWeightsAndEveryBatchDeterministically) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 16);
  CliResult r = run_cli(trace_args(tmp.file("data"), tmp.file("run"), tmp.file("trace")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto steps = read_trace(tmp.file("trace/steps.bin"));
  ASSERT_EQ(steps.size(), 3u);
  for (size_t k = 0; k < steps.size(); ++k) {
    const TraceStep& s = steps[k];
    EXPECT_EQ(s.step, static_cast<int64_t>(k));
    EXPECT_GT(s.lr, 0);
    EXPECT_TRUE(std::isfinite(s.loss) && s.loss > 0) << s.loss;
    EXPECT_EQ(s.dims[0], 16);
    EXPECT_EQ(s.dims[1], 28);
    EXPECT_EQ(s.dims[2], 28);
    EXPECT_EQ(s.dims[3], 1);
    for (int64_t label : s.labels) EXPECT_TRUE(label >= 0 && label < 10) << label;
  }
  // The weights before the first step, under the checkpoint's (timm's) names.
  const SafeTensors init = SafeTensors::open(tmp.file("trace/init.safetensors"));
  const SafeTensors ckpt = SafeTensors::open(tmp.file("run/model.safetensors"));
  EXPECT_EQ(init.names(), ckpt.names());

  // Same seed, same trace, byte for byte; a trace folder is never overwritten.
  r = run_cli(trace_args(tmp.file("data"), tmp.file("run2"), tmp.file("trace2")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_bytes(tmp.file("trace/steps.bin")), read_bytes(tmp.file("trace2/steps.bin")));
  EXPECT_EQ(read_bytes(tmp.file("trace/init.safetensors")), read_bytes(tmp.file("trace2/init.safetensors")));
  r = run_cli(trace_args(tmp.file("data"), tmp.file("run3"), tmp.file("trace")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already holds a trace"), std::string::npos) << r.err;
}

TEST(StepTrace, RandomnessItCannotRecordIsOneClearLine) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 16);
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{"--drop-path", "0.1"}, std::vector<std::string>{"--mixup", "0.2"}}) {
    std::vector<std::string> args = trace_args(tmp.file("data"), tmp.file("run"), tmp.file("trace"));
    const auto at = std::find(args.begin(), args.end(), extra[0]);
    if (at != args.end()) args.erase(at, at + 2);  // the replay's own --drop-path 0
    args.insert(args.end(), extra.begin(), extra.end());
    CliResult r = run_cli(args);
    EXPECT_EQ(r.exit_code, 1) << extra[0];
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("--trace records batches and weights"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(tmp.file("trace"))) << "nothing is written";
  }
}

TEST(FashionMnistResized, IsBilinearWithHalfPixelCentresAndSized) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 4, 4);
  DataTransform t;
  t.mean = {0.f};
  t.std = {1.f};
  auto plain = open_fashion_mnist(tmp.file("data"), "test", t);
  t.upscale = 56;
  auto big = open_fashion_mnist(tmp.file("data"), "test", t);
  EXPECT_EQ(big->image_size(), 56);
  EXPECT_NE(big->describe().find("resized to 56x56"), std::string::npos);
  Rng rng(1);
  const Tensor a = plain->get(1, false, rng).image, b = big->get(1, false, rng).image;
  ASSERT_EQ(b.numel(), 56 * 56);
  auto in = [&](int y, int x) { return a.data()[y * 28 + x]; };
  auto out = [&](int y, int x) { return b.data()[y * 56 + x]; };
  // 2x: output 2i+1 sits at input i + 0.25, output 2i at i - 0.25 (clamped to 0 at the edge).
  EXPECT_FLOAT_EQ(out(0, 0), in(0, 0));
  EXPECT_NEAR(out(3, 5), 0.75f * (0.75f * in(1, 2) + 0.25f * in(1, 3)) + 0.25f * (0.75f * in(2, 2) + 0.25f * in(2, 3)),
              1e-6);
  EXPECT_NEAR(out(55, 55), in(27, 27), 1e-6);  // the last source pixel is clamped too
  // Training samples are augmented at 28×28, then resized.
  EXPECT_EQ(big->get(1, true, rng).image.numel(), 56 * 56);
}

TEST(FashionMnistResized, SpecIsCheckedAndOnlyForIdxData) {
  EXPECT_EQ(split_idx_upscale("fashion-mnist:64"), std::make_pair(std::string("fashion-mnist"), 64));
  EXPECT_EQ(split_idx_upscale("fashion-mnist"), std::make_pair(std::string("fashion-mnist"), 0));
  EXPECT_EQ(split_idx_upscale("csv:/some/file.csv"), std::make_pair(std::string("csv:/some/file.csv"), 0));
  EXPECT_THROW(split_idx_upscale("fashion-mnist:big"), Error);
  EXPECT_THROW(split_idx_upscale("fashion-mnist:4"), Error);
  EXPECT_THROW(split_idx_upscale("fashion-mnist:99999"), Error);
}

TEST(FashionMnistResized, ABadSizeOnTheCommandLineIsOneClearLine) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 16);
  for (const std::string& spec : {tmp.file("data") + ":4", tmp.file("data") + ":big"}) {
    CliResult r = run_cli({"train", "--config", kConfig, "--data", spec, "--epochs", "1", "--out", tmp.file("run"),
                           "--no-progress"});
    EXPECT_EQ(r.exit_code, 1) << spec;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(spec), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(tmp.file("run")));
  }
}

TEST(FashionMnistResized, TrainsAtTheRequestedSize) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 16);
  CliResult r = run_cli({"train", "--config", kConfig, "--data", tmp.file("data") + ":48", "--epochs", "1",
                         "--max-steps", "2", "--batch", "16", "--out", tmp.file("run"), "--threads", "2",
                         "--no-progress"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("resized to 48x48"), std::string::npos) << r.out;
  const auto config = nlohmann::json::parse(read_bytes(tmp.file("run/config.json")));
  EXPECT_EQ(config["input"]["size"], 48);
}

}  // namespace
}  // namespace mf::test
