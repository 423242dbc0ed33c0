// Training: the loss falls, runs are deterministic, a run killed with SIGKILL (between steps or in
// the middle of writing a checkpoint) and resumed ends with the same weights bit for bit, and bad
// data gets a clear error or a counted skip.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "data/loader.h"
#include "io/safetensors.h"
#include "ops/backend.h"
#include "ops/ops.h"
#include "cli_expect.h"
#include "test_util.h"
#include "train_fixtures.h"
#include "train/mixup.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/targets.h"

namespace mf::test {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> train_args(const std::string& data, const std::string& out, int epochs) {
  return {"train", "--config", kConfig, "--data", data, "--epochs", std::to_string(epochs), "--batch", "32",
          "--lr", "3e-3", "--out", out, "--threads", "2", "--workers", "2", "--no-progress", "--seed", "7",
          "--drop-path", "0.1", "--mixup", "0.2", "--cutmix", "1.0", "--mix-prob", "0.5", "--ema", "0.99",
          "--clip-grad", "5"};
}

TEST(Train, LossFallsOnFashionMnist) {
  if (!fs::exists(kDebianFashionMnistDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TempDir tmp;
  // A few hundred steps on a subset: the short version of the README's benchmark.
  CliResult r = run_cli({"train", "--config", kConfig, "--data", "fashion-mnist", "--epochs", "3", "--batch", "32",
                         "--subset", "3200", "--eval-subset", "1000", "--out", tmp.file("run"), "--threads", "2",
                         "--no-progress"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rows = metrics(tmp.file("run"));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows.back()["step"].get<int>(), 300);
  const double first = rows.front()["train_loss"], last = rows.back()["train_loss"];
  EXPECT_LT(last, 0.6 * std::log(10.0)) << "the loss should fall well below ln(10) = 2.30";
  EXPECT_LT(last, first);
  EXPECT_GT(rows.back()["top1"].get<double>(), 60.0);
  EXPECT_TRUE(fs::exists(tmp.file("run/curves.svg")));
  EXPECT_TRUE(fs::exists(tmp.file("run/model.safetensors")));
}

// metrics.jsonl's steady_images_per_s times an epoch from the end of its fifth step (start-up left
// out; the GPU training benchmark reads it): present in an epoch of 8 steps, absent in one of 4.
TEST(Train, SteadyThroughputIsRecordedAfterTheFifthStep) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 16);
  for (const int batch : {8, 16}) {
    const std::string run = tmp.file("run" + std::to_string(batch));
    CliResult r = run_cli({"train", "--config", kConfig, "--data", tmp.file("data"), "--epochs", "1", "--batch",
                           std::to_string(batch), "--out", run, "--threads", "1", "--workers", "1", "--no-progress"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto rows = metrics(run);
    ASSERT_EQ(rows.size(), 1u);
    if (batch == 8) {
      ASSERT_TRUE(rows[0].contains("steady_images_per_s")) << rows[0].dump();
      EXPECT_GT(rows[0]["steady_images_per_s"].get<double>(), 0.0);
    } else {
      EXPECT_FALSE(rows[0].contains("steady_images_per_s")) << rows[0].dump();
    }
  }
}

TEST(Train, SameSeedSameWeightsAndResumeAfterKillIsBitExact) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  const std::string data = tmp.file("data");
  // Reference: three epochs without interruption (10 steps each).
  CliResult a = run_cli(train_args(data, tmp.file("a"), 3));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const auto reference = read_bytes(tmp.file("a/model.safetensors"));
  const auto reference_ema = read_bytes(tmp.file("a/model_ema.safetensors"));

  // The same run again: identical bytes.
  CliResult b = run_cli(train_args(data, tmp.file("b"), 3));
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_TRUE(read_bytes(tmp.file("b/model.safetensors")) == reference) << "two runs with one seed differ";

  // Killed with SIGKILL after step 15 (in epoch 2), then resumed from the epoch-1 checkpoint.
  CliResult resumed = kill_at_step_then_resume(train_args(data, tmp.file("c"), 3), tmp.file("c"), 15, {"--threads", "2"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("(epoch 1, step 10)"), std::string::npos) << resumed.out;  // the epoch-1 checkpoint
  EXPECT_TRUE(read_bytes(tmp.file("c/model.safetensors")) == reference) << "resumed run differs";
  EXPECT_TRUE(read_bytes(tmp.file("c/model_ema.safetensors")) == reference_ema) << "resumed EMA differs";
  EXPECT_EQ(metrics(tmp.file("c")).size(), 3u);

  // Killed while checkpoint 2 is half written: checkpoint 1 stays the latest and intact.
  setenv("MF_DEBUG_KILL_IN_CHECKPOINT", "2", 1);
  CliResult killed2 = run_cli(train_args(data, tmp.file("d"), 3));
  unsetenv("MF_DEBUG_KILL_IN_CHECKPOINT");
  EXPECT_EQ(killed2.exit_code, 128 + SIGKILL);
  std::ifstream latest(tmp.file("d/checkpoints/latest"));
  std::string name;
  latest >> name;
  EXPECT_EQ(name, "epoch-0001");
  CliResult resumed2 = run_cli({"train", "--resume", tmp.file("d"), "--threads", "2", "--no-progress"});
  ASSERT_EQ(resumed2.exit_code, 0) << resumed2.err;
  EXPECT_TRUE(read_bytes(tmp.file("d/model.safetensors")) == reference) << "resumed run differs";
  EXPECT_FALSE(fs::exists(tmp.file("d/checkpoints/epoch-0002.tmp")));
}

TEST(Train, CheckpointHoldsExactlyTheModelsTimmKeys) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 32);
  CliResult r = run_cli({"train", "--model", "poolformerv2_s12", "--data", tmp.file("data"), "--epochs", "1",
                         "--batch", "16", "--max-steps", "2", "--out", tmp.file("run"), "--threads", "2",
                         "--no-progress"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("10 classes"), std::string::npos) << r.out;
  SafeTensors st = SafeTensors::open(tmp.file("run/model.safetensors"));
  EXPECT_EQ(st.names().size(), 104u);  // poolformerv2_s12's state dict
  EXPECT_TRUE(st.contains("stem.conv.weight"));
  EXPECT_EQ(st.info("stem.conv.weight").shape, (Shape{64, 1, 7, 7}));
  EXPECT_EQ(st.info("head.fc.weight").shape, (Shape{10, 512}));
  // The run can be evaluated and resumed by name.
  CliResult ev = run_cli({"eval", "--config", tmp.file("run/config.json"), "--weights",
                          tmp.file("run/model.safetensors"), "--data", tmp.file("data")});
  ASSERT_EQ(ev.exit_code, 0) << ev.err;
  EXPECT_NE(ev.out.find("top-1"), std::string::npos);
}

TEST(Train, FineTuningReinitialisesAMismatchedClassifierAndAdaptsTheStem) {
  TempDir tmp;
  // A 2-class RGB model (an image folder at 64×64), then fine-tuned on 10-class grey data.
  write_image_folder(tmp.file("imgs"), 2);
  write_idx_dataset(tmp.file("data"), 32, 16);
  const std::string cfg = tmp.file("small.json");
  const std::string json = R"({"name": "poolformerv2_s12", "depths": [1, 1, 1, 1], "dims": [64, 128, 320, 512],
      "mixers": "pooling", "norms": "group_norm1_nobias", "head": {"type": "linear"}, "input": {"size": 64}})";
  write_bytes(cfg, std::vector<uint8_t>(json.begin(), json.end()));
  CliResult first = run_cli({"train", "--config", cfg, "--data", tmp.file("imgs"), "--epochs", "1", "--batch", "2",
                             "--max-steps", "1", "--out", tmp.file("a"), "--threads", "2", "--no-progress"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  CliResult ft = run_cli({"train", "--config", cfg, "--weights", tmp.file("a/model.safetensors"), "--data",
                          tmp.file("data"), "--epochs", "1", "--batch", "16", "--max-steps", "1", "--out",
                          tmp.file("b"), "--threads", "2", "--no-progress"});
  ASSERT_EQ(ft.exit_code, 0) << ft.err;
  EXPECT_NE(ft.out.find("re-initialised head.fc.weight"), std::string::npos) << ft.out;
  EXPECT_NE(ft.out.find("summed the checkpoint's 3 input channels into 1"), std::string::npos) << ft.out;
  // Weights of another architecture do not load.
  CliResult bad = run_cli({"train", "--config", kConfig, "--weights", tmp.file("a/model.safetensors"), "--data",
                           tmp.file("data"), "--epochs", "1", "--batch", "16", "--out", tmp.file("c"), "--threads",
                           "2", "--no-progress"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("do not fit"), std::string::npos) << bad.err;
}

TEST(Train, RefusesToOverwriteARun) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 32);
  auto args = std::vector<std::string>{"train", "--config", kConfig, "--data", tmp.file("data"), "--epochs", "1",
                                       "--batch", "16", "--out", tmp.file("run"), "--threads", "1", "--no-progress"};
  ASSERT_EQ(run_cli(args).exit_code, 0);
  CliResult again = run_cli(args);
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("--resume"), std::string::npos) << again.err;
}

// ---- bad data ----------------------------------------------------------------------------------

void expect_train_error(const std::string& data, const std::string& phrase) {
  TempDir tmp;
  CliResult r = run_cli({"train", "--config", kConfig, "--data", data, "--epochs", "1", "--batch", "8", "--out",
                         tmp.file("run"), "--threads", "1", "--no-progress"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128) << "crashed: " << r.err;
  EXPECT_NE(r.err.find(phrase), std::string::npos) << r.err;
}

TEST(TrainData, TruncatedIdxFile) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 16, /*truncate_images=*/true);
  expect_train_error(tmp.file("data"), "truncated file");
}

TEST(TrainData, WrongImageCount) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 16, false, /*label_count_delta=*/-3);
  expect_train_error(tmp.file("data"), "has 64 images but");
}

TEST(TrainData, CorruptGzipAndBadMagic) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 32, 16);
  write_bytes(tmp.file("data/train-images-idx3-ubyte"), {0x1F, 0x8B, 8, 0, 1, 2, 3});
  expect_train_error(tmp.file("data"), "gzip");
  write_bytes(tmp.file("data/train-images-idx3-ubyte"), {1, 2, 3, 4, 5, 6, 7, 8});
  expect_train_error(tmp.file("data"), "not an IDX file");
}

TEST(TrainData, LabelOutOfRange) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 32, 16);
  auto labels = read_bytes(tmp.file("data/train-labels-idx1-ubyte"));
  labels[8 + 5] = 42;
  write_bytes(tmp.file("data/train-labels-idx1-ubyte"), labels);
  expect_train_error(tmp.file("data"), "label 42 of sample 5");
}

TEST(TrainData, EmptyClassFolder) {
  TempDir tmp;
  write_image_folder(tmp.file("imgs"), 3);
  fs::create_directories(tmp.file("imgs/birds"));
  expect_train_error(tmp.file("imgs"), "class folder 'birds' has no images");
}

TEST(TrainData, NoClassFoldersAndMissingFolder) {
  TempDir tmp;
  fs::create_directories(tmp.file("empty"));
  expect_train_error(tmp.file("empty"), "no class folders");
  expect_train_error(tmp.file("nope"), "no such data folder");
}

TEST(TrainData, CorruptImageIsSkippedCountedAndLogged) {
  TempDir tmp;
  write_image_folder(tmp.file("imgs"), 4);
  write_bytes(tmp.file("imgs/dogs/2.png"), {0x89, 'P', 'N', 'G', 1, 2, 3});
  CliResult r = run_cli({"train", "--config", kConfig, "--data", tmp.file("imgs"), "--epochs", "1", "--batch", "4",
                         "--out", tmp.file("run"), "--threads", "1", "--no-progress"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The count and the first file on stderr; every file in the run's skipped.txt.
  EXPECT_NE(r.err.find("skipped 1 unreadable file in training epoch 1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("dogs/2.png"), std::string::npos) << r.err;
  const auto log = read_bytes(tmp.file("run/skipped.txt"));
  EXPECT_NE(std::string(log.begin(), log.end()).find("dogs/2.png"), std::string::npos);
  auto rows = metrics(tmp.file("run"));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_GE(rows[0]["skipped_samples"].get<int>(), 1);
}

// ---- components -------------------------------------------------------------------------------

TEST(TrainParts, LoaderOrderIsAFunctionOfSeedAndEpoch) {
  LoaderOptions o;
  o.seed = 3;
  o.epoch = 1;
  auto a = DataLoader::epoch_order(1000, o);
  EXPECT_EQ(a, DataLoader::epoch_order(1000, o));
  o.epoch = 2;
  EXPECT_NE(a, DataLoader::epoch_order(1000, o));
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i);
  o.subset = 100;
  EXPECT_EQ(DataLoader::epoch_order(1000, o).size(), 100u);
}

TEST(TrainParts, LoaderBatchesDoNotDependOnWorkers) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 100, 16);
  DataTransform t;
  t.mean = {0.5f};
  t.std = {0.5f};
  auto ds = open_fashion_mnist(tmp.file("data"), "train", t);
  // Nor on where the images are put: `pinned` asks the device for page-locked memory (a GPU run),
  // and without a device (or with METAFORMER_CUDA_PINNED_BATCHES=0 on one) gets ordinary memory.
  std::vector<Tensor> seen[3];
  for (int k : {0, 1, 2}) {
    LoaderOptions o;
    o.batch = 16;
    o.workers = k == 0 ? 0 : 3;
    o.pinned = k == 2;
    o.seed = 5;
    DataLoader loader(*ds, o);
    while (auto b = loader.next()) seen[k].push_back(b->images);
  }
  for (int k : {0, 1, 2}) ASSERT_EQ(seen[k].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(max_abs_diff(seen[0][i], seen[1][i]), 0.0);
    EXPECT_EQ(max_abs_diff(seen[0][i], seen[2][i]), 0.0);
  }
}

// A dataset of tiny images whose value and label are the index, that refuses the indices in `bad`
// (as an unreadable file), and that can hold each call until `hold` calls are running at once (or
// two seconds pass), recording the most it saw: how many workers the loader really keeps busy.
class ProbeDataset : public Dataset {
 public:
  ProbeDataset(int64_t n, std::set<int64_t> bad, int hold) : n_(n), bad_(std::move(bad)), hold_(hold) {}
  int64_t size() const override { return n_; }
  int num_classes() const override { return 1000; }
  int channels() const override { return 1; }
  int image_size() const override { return 2; }
  std::vector<std::string> class_names() const override { return {}; }
  int64_t label(int64_t index) const override { return index; }
  std::string describe() const override { return "probe"; }
  Sample get(int64_t index, bool, Rng& rng) const override {
    if (hold_ > 0) {
      std::unique_lock<std::mutex> lock(mu_);
      most_ = std::max(most_, ++running_);
      cv_.notify_all();
      cv_.wait_for(lock, std::chrono::seconds(2), [&] { return running_ >= hold_ || released_; });
      released_ = released_ || running_ >= hold_;
      --running_;
    }
    if (bad_.count(index)) throw Error(fmt::format("sample {} is unreadable", index));
    Sample s;
    s.image = Tensor::full({2, 2, 1}, static_cast<float>(index) + static_cast<float>(rng.uniform()));
    s.label = index;
    return s;
  }
  int most() const {
    std::lock_guard<std::mutex> lock(mu_);
    return most_;
  }

 private:
  int64_t n_;
  std::set<int64_t> bad_;
  int hold_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable int running_ = 0, most_ = 0;
  mutable bool released_ = false;
};

TEST(TrainParts, LoaderKeepsEveryWorkerBusyWhateverTheBatch) {
  // Eight workers, batches of 16, four batches ahead: all eight decode at once. (Workers that each
  // built a whole batch kept at most `prefetch` of them busy.)
  ProbeDataset data(256, {}, 8);
  LoaderOptions o;
  o.batch = 16;
  o.workers = 8;
  o.prefetch = 4;
  DataLoader loader(data, o);
  int batches = 0;
  while (auto b = loader.next()) ++batches;
  EXPECT_EQ(batches, 16);
  EXPECT_EQ(data.most(), 8);
}

TEST(TrainParts, LoaderLeavesOutUnreadableSamplesInOrderWhateverTheWorkers) {
  // Unreadable samples anywhere in a batch, and a batch with none readable: the same batches, labels
  // and messages with the calling thread alone and with five workers.
  std::set<int64_t> bad;
  for (int64_t i = 0; i < 64; ++i)
    if (i % 7 == 3) bad.insert(i);
  for (int64_t i = 40; i < 48; ++i) bad.insert(i);
  ProbeDataset data(64, bad, 0);
  std::vector<std::vector<int64_t>> labels[2];
  std::vector<Tensor> images[2];
  std::vector<std::string> skipped[2];
  for (int k : {0, 1}) {
    LoaderOptions o;
    o.batch = 8;
    o.workers = k == 0 ? 0 : 5;
    o.shuffle = false;
    o.seed = 11;
    DataLoader loader(data, o);
    while (auto b = loader.next()) {
      labels[k].push_back(b->labels);
      images[k].push_back(b->images);
    }
    skipped[k] = loader.skipped();
  }
  ASSERT_EQ(labels[0].size(), 8u);
  EXPECT_EQ(labels[0], labels[1]);
  EXPECT_EQ(skipped[0], skipped[1]);
  EXPECT_EQ(skipped[0].size(), bad.size());
  EXPECT_TRUE(labels[0][5].empty());  // samples 40..47: none readable
  EXPECT_FALSE(images[0][5].defined());
  for (size_t b = 0; b < labels[0].size(); ++b) {
    for (int64_t l : labels[0][b]) EXPECT_EQ(bad.count(l), 0u) << l;
    if (!images[0][b].defined()) continue;
    ASSERT_EQ(images[0][b].dim(0), static_cast<int64_t>(labels[0][b].size()));
    EXPECT_EQ(max_abs_diff(images[0][b], images[1][b]), 0.0);
    for (size_t r = 0; r < labels[0][b].size(); ++r)  // each row is its own sample's
      EXPECT_EQ(std::floor(images[0][b].data()[r * 4]), static_cast<float>(labels[0][b][r]));
  }
}

TEST(TrainParts, ScheduleWarmsUpThenDecays) {
  LrSchedule s{1e-3, 1e-5, 1e-6, 10, 110};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-6);
  EXPECT_NEAR(s.at(5), 1e-6 + (1e-3 - 1e-6) * 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_NEAR(s.at(60), 1e-5 + 0.5 * (1e-3 - 1e-5), 1e-12);
  EXPECT_NEAR(s.at(110), 1e-5, 1e-12);
}

TEST(TrainParts, MixupTargetsAreDistributionsAndCutmixAreaMatchesLambda) {
  Rng rng(1);
  for (int trial = 0; trial < 20; ++trial) {
    Tensor images = random_tensor({4, 16, 16, 3}, static_cast<uint64_t>(trial));
    MixupOptions o;
    o.mixup_alpha = 0.8;
    o.cutmix_alpha = 1.0;
    double lam = 0;
    Tensor t = mix_batch(images, {0, 1, 2, 3}, 5, o, rng, &lam);
    for (int64_t b = 0; b < 4; ++b) {
      double sum = 0;
      for (int64_t k = 0; k < 5; ++k) sum += t.data()[b * 5 + k];
      EXPECT_NEAR(sum, 1.0, 1e-5);
    }
    EXPECT_GE(lam, 0.0);
    EXPECT_LE(lam, 1.0);
  }
  double mean = 0;
  for (int i = 0; i < 4000; ++i) mean += sample_beta(0.8, rng);
  EXPECT_NEAR(mean / 4000, 0.5, 0.02);
}

// Mixup/CutMix split as the trainer runs it on a GPU: draw_mix + mix_targets + op::mix_images give
// mix_batch's targets, λ, images (bit for bit) and leave the generator where mix_batch leaves it.
TEST(TrainParts, MixPlanAndMixImagesAreMixBatch) {
  const Exec cpu{&get_backend("cpu"), nullptr};
  MixupOptions o;
  o.mixup_alpha = 0.8;
  o.cutmix_alpha = 1.0;
  o.prob = 0.8;
  int seen[3] = {0, 0, 0};
  for (uint64_t trial = 0; trial < 40; ++trial) {
    const Tensor images = random_tensor({4, 12, 10, 3}, trial);
    const std::vector<int64_t> labels{0, 3, 1, 3};
    Rng r1(trial), r2(trial);
    Tensor mixed = images.clone();
    double lam = 0;
    const Tensor t1 = mix_batch(mixed, labels, 5, o, r1, &lam);
    const MixPlan plan = draw_mix(12, 10, o, r2);
    const Tensor t2 = mix_targets(labels, 5, o, plan);
    ++seen[static_cast<int>(plan.mode)];
    EXPECT_EQ(r1.next(), r2.next()) << "trial " << trial;
    EXPECT_EQ(lam, plan.lambda);
    EXPECT_EQ(max_abs_diff(t1, t2), 0.0);
    const Tensor got = op::mix_images(cpu, images, plan);
    EXPECT_EQ(std::memcmp(got.data(), mixed.data(), sizeof(float) * mixed.numel()), 0) << "trial " << trial;
  }
  EXPECT_GT(seen[0], 0);  // none, blend and box all drawn
  EXPECT_GT(seen[1], 0);
  EXPECT_GT(seen[2], 0);
}

// The trainer reads each step's losses a step late (op::cross_entropy_losses, Tensor::to_host_later);
// their mean is the loss cross_entropy returns, bit for bit, with the same gradient.
TEST(TrainParts, PerSampleLossesReadLaterGiveTheMeanLoss) {
  const Exec e{&get_backend("cpu"), nullptr};
  const Tensor logits = random_tensor({5, 7}, 3);
  std::vector<int64_t> labels{0, 6, 3, 3, 1};
  const Tensor targets = smoothed_targets(labels, 7, 0.1);
  Tensor d1, d2;
  const double loss = op::cross_entropy(e, logits, targets, d1);
  const Tensor losses = op::cross_entropy_losses(e, logits, targets, d2);
  ASSERT_EQ(losses.shape(), Shape({5}));
  auto later = losses.to_host_later();
  const Tensor host = later();
  EXPECT_TRUE(host.same_memory(losses));  // a host tensor is given as it is
  EXPECT_EQ(op::mean_loss(host), loss);
  EXPECT_EQ(max_abs_diff(d1, d2), 0.0);
}

// A loss that stops being finite ends the run with one line naming the step, and no checkpoint
// of the diverged weights is written (the check runs a step late, before the epoch's checkpoint).
TEST(Train, DivergedLossIsOneClearLineNamingTheStep) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 32);
  CliResult r = run_cli({"train", "--config", kConfig, "--data", tmp.file("data"), "--epochs", "1", "--batch", "16",
                         "--lr", "1e30", "--warmup-epochs", "0", "--out", tmp.file("run"), "--threads", "2",
                         "--no-progress"});
  expect_clean_failure(r, "the loss diverged at step");
  EXPECT_FALSE(fs::exists(tmp.file("run/model.safetensors")));
}

TEST(TrainParts, AdamWFirstStepMatchesTheClosedForm) {
  // After one step from zero moments, AdamW moves each weight by lr · g / (|g| + eps') after decay.
  struct One : Module {
    One() { p = &add_param("weight", {2, 2}, Init::ones(), true); }
    std::string kind() const override { return "One"; }
    Parameter* p;
  } m;
  m.p->value.fill(1.f);
  AdamW opt(m, {0.1, 0.9, 0.999, 1e-8, 0.5});
  opt.zero_grad();
  m.p->grad.copy_from(Tensor::from({2, 2}, std::vector<float>{1, -2, 0.5f, 0}));
  opt.step(0.1);
  const float decayed = 1.f * (1.f - 0.1f * 0.5f);
  EXPECT_NEAR(m.p->value.data()[0], decayed - 0.1f, 1e-6);
  EXPECT_NEAR(m.p->value.data()[1], decayed + 0.1f, 1e-6);
  EXPECT_NEAR(m.p->value.data()[3], decayed, 1e-6);
  EXPECT_NEAR(opt.grad_norm(), std::sqrt(1 + 4 + 0.25), 1e-6);
  EXPECT_NEAR(opt.clip_grad_norm(1.0), std::sqrt(5.25), 1e-6);
  EXPECT_NEAR(opt.grad_norm(), 1.0, 1e-5);
}

TEST(TrainParts, GradientsAreViewsOfOneFlatBufferThatOneFillZeroes) {
  // The data-parallel all-reduce and zero_grad work on AdamW::flat_gradients, so every gradient
  // must view it, in parameter order, and stay a view (or be made one again) across steps. Each
  // starts at a 64-float (256-byte) boundary, which the GPU's GEMMs that write them in place need for
  // their fastest kernels; the gaps are zeroed with the rest.
  struct Two : Module {
    Two() {
      a = &add_param("a", {2, 3}, Init::ones(), true);
      b = &add_param("b", {4}, Init::zeros(), false);
    }
    std::string kind() const override { return "Two"; }
    Parameter *a, *b;
  } m;
  AdamW opt(m, {});
  opt.zero_grad();
  Tensor& flat = opt.flat_gradients();
  ASSERT_TRUE(flat.defined());
  ASSERT_EQ(flat.numel(), 128);
  EXPECT_EQ(m.a->grad.data(), flat.data());
  EXPECT_EQ(m.b->grad.data(), flat.data() + 64);
  EXPECT_EQ(m.a->grad.shape(), Shape({2, 3}));
  flat.fill(2.f);  // written through the buffer, seen through the views
  EXPECT_EQ(m.b->grad.data()[3], 2.f);
  opt.zero_grad();
  for (int64_t i = 0; i < flat.numel(); ++i) EXPECT_EQ(flat.data()[i], 0.f);
  // A gradient replaced behind the optimizer's back (a move between devices does this) is made a
  // view again by the next zero_grad.
  m.b->grad = Tensor::full({4}, 5.f);
  opt.zero_grad();
  EXPECT_EQ(m.b->grad.data(), opt.flat_gradients().data() + 64);
  EXPECT_EQ(m.b->grad.data()[0], 0.f);
}

}  // namespace
}  // namespace mf::test
