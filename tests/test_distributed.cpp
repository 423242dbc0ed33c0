// Data-parallel training across processes (docs/distributed.md): the built CLI under
// `mpirun --oversubscribe -np 2`, one compute thread per rank. N ranks at batch b train like one
// process at batch N*b, rank 0 alone writes, a killed rank ends the job and leaves the last checkpoint
// intact, a run resumes with another number of ranks, and ranks started differently are stopped at
// once. Skipped (not passed) when the build has no MPI or mpirun is not installed.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/dataset.h"
#include "data/idx.h"
#include "data/loader.h"
#include "io/safetensors.h"
#include "cli_expect.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train_fixtures.h"

namespace mf::test {
namespace {

namespace fs = std::filesystem;

// mpirun on PATH, or "" when there is none.
std::string find_mpirun() {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const fs::path candidate = fs::path(dirs.substr(start, end - start)) / "mpirun";
    if (!candidate.parent_path().empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    start = end + 1;
  }
  return "";
}

#define SKIP_WITHOUT_MPI()                                                                           \
  do {                                                                                               \
    if (!Distributed::compiled_with_mpi()) GTEST_SKIP() << "this build has no MPI (METAFORMER_MPI)";   \
    if (find_mpirun().empty()) GTEST_SKIP() << "mpirun is not installed (openmpi-bin)";               \
  } while (0)

// The options every run here shares: a small ConvFormer on 320 training images (10 steps an epoch at
// a global batch of 32), one thread per rank (CI has 2 cores), nothing random but the data order (no
// drop path, no Mixup: those draw per rank; docs/distributed.md).
std::vector<std::string> train_args(const std::string& data, const std::string& out, int64_t batch, int epochs = 1) {
  return {"train", "--config", kConfig, "--data", data, "--epochs", std::to_string(epochs), "--batch",
          std::to_string(batch), "--lr", "3e-3", "--out", out, "--threads", "1", "--workers", "1", "--no-progress",
          "--seed", "7", "--drop-path", "0", "--clip-grad", "5"};
}

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// mpirun's own options: as root it needs the two OMPI_ALLOW_* variables; --oversubscribe allows more
// ranks than cores; --bind-to none leaves the cores to the scheduler (concurrent tests would otherwise
// pin their ranks to the same cores); --timeout ends a job that hangs (a bug) instead of the test
// waiting forever, saying so in a line the tests look for. Shared memory without cross-process
// memory attach (CMA): containers often forbid it, and OpenMPI would then print a warning per message.
constexpr const char* kTimeLimitMessage = "time limit for job execution";
std::vector<std::string> mpirun_options(int ranks) {
  return {"--oversubscribe", "--bind-to", "none", "--timeout", "300", "--mca", "btl_vader_single_copy_mechanism",
          "none", "-np", std::to_string(ranks)};
}

CliResult mpirun(int ranks, const std::vector<std::string>& args) {
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  return run_program(find_mpirun(), concat(concat(mpirun_options(ranks), {MF_CLI_PATH}), args));
}

// Two ranks started with different arguments (MPI's "MPMD" form: `mpirun -np 1 A : -np 1 B`).
CliResult mpirun_two(const std::vector<std::string>& rank0, const std::vector<std::string>& rank1) {
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  std::vector<std::string> args = concat(concat(mpirun_options(1), {MF_CLI_PATH}), rank0);
  args.push_back(":");
  args = concat(concat(concat(args, {"-np", "1"}), {MF_CLI_PATH}), rank1);
  return run_program(find_mpirun(), args);
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// ||a - b|| / ||b|| over all the weights of two files together.
double weights_relative_difference(const std::string& a_path, const std::string& b_path) {
  const SafeTensors a = SafeTensors::open(a_path), b = SafeTensors::open(b_path);
  EXPECT_EQ(a.names(), b.names());
  double diff = 0, norm = 0;
  for (const auto& name : a.names()) {
    const Tensor x = a.load(name), y = b.load(name);
    for (int64_t i = 0; i < y.numel(); ++i) {
      const double d = static_cast<double>(x.data()[i]) - y.data()[i];
      diff += d * d;
      norm += static_cast<double>(y.data()[i]) * y.data()[i];
    }
  }
  return std::sqrt(diff / norm);
}

// 2 ranks at batch b and 1 process at 2b sum the same per-sample gradients in another order (each
// rank sums its half, then MPI adds the two halves): equal to float rounding, not bit for bit. AdamW
// steps on such gradients stay this close (measured: 1.6e-7 after 10 steps, 6.6e-7 after 30 steps
// with a change of ranks). Per element, the difference can be larger: AdamW divides a gradient by its
// own running magnitude, so a weight whose gradient is nearly zero moves by its rounding too.
constexpr double kRankTolerance = 1e-5;

TEST(Distributed, TwoRanksMatchOneRankAtTwiceTheBatch) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  CliResult two = mpirun(2, train_args(tmp.file("data"), tmp.file("two"), 16));
  ASSERT_EQ(two.exit_code, 0) << two.out << two.err;
  EXPECT_NE(two.out.find("data parallel: 2 ranks x batch 16 = 32 per step"), std::string::npos) << two.out;
  CliResult one = run_cli(train_args(tmp.file("data"), tmp.file("one"), 32));
  ASSERT_EQ(one.exit_code, 0) << one.err;

  EXPECT_LT(weights_relative_difference(tmp.file("two/model.safetensors"), tmp.file("one/model.safetensors")),
            kRankTolerance);
  const auto rows_two = metrics(tmp.file("two")), rows_one = metrics(tmp.file("one"));
  ASSERT_EQ(rows_two.size(), 1u);
  ASSERT_EQ(rows_one.size(), 1u);
  EXPECT_EQ(rows_two[0]["step"], 10);
  EXPECT_EQ(rows_two[0]["ranks"], 2);
  // The training loss is the mean over the ranks, and the evaluation is summed over their shares.
  EXPECT_NEAR(rows_two[0]["train_loss"].get<double>(), rows_one[0]["train_loss"].get<double>(), 1e-5);
  EXPECT_NEAR(rows_two[0]["eval_loss"].get<double>(), rows_one[0]["eval_loss"].get<double>(), 1e-4);
  EXPECT_EQ(rows_two[0]["top1"], rows_one[0]["top1"]);
  // The recorded batch is the global one, which a resume keeps whatever the number of ranks.
  std::ifstream args(tmp.file("two/train_args.json"));
  EXPECT_EQ(nlohmann::json::parse(args)["batch"], 32);
}

// Gradient buckets (--bucket-mb, train/grad_buckets.h) start the averaging during the backward pass.
// With 2 ranks each averaged element is (a + b) / 2 however the buffer is cut into messages, so tiny
// buckets (many MPI_Iallreduce calls, started while the backward pass goes on) must give the very
// same weights as one MPI_Allreduce after it. (The default, 25 MiB, is one bucket for this model.)
TEST(Distributed, GradientBucketsGiveTheWeightsOfOneAllReduce) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 160, 32);
  auto with_buckets = [&](const std::string& out, const std::string& mb) {
    std::vector<std::string> args = train_args(tmp.file("data"), tmp.file(out), 16);
    args.insert(args.end(), {"--bucket-mb", mb});
    return mpirun(2, args);
  };
  CliResult small = with_buckets("small", "0.01");
  ASSERT_EQ(small.exit_code, 0) << small.out << small.err;
  CliResult none = with_buckets("none", "0");
  ASSERT_EQ(none.exit_code, 0) << none.out << none.err;
  EXPECT_EQ(weights_relative_difference(tmp.file("small/model.safetensors"), tmp.file("none/model.safetensors")), 0.0);
}

// A bucket size that is not a size is refused before anything is read or written, in one line.
TEST(Distributed, BadBucketSizeIsOneClearLine) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 32, 16);
  for (const char* bad : {"-1", "lots", "1e9"}) {
    SCOPED_TRACE(bad);
    std::vector<std::string> args = train_args(tmp.file("data"), tmp.file("run"), 16);
    args.insert(args.end(), {"--bucket-mb", bad});
    expect_clean_failure(run_cli(args), "--bucket-mb");
    EXPECT_FALSE(std::filesystem::exists(tmp.file("run")));
  }
}

// --allreduce bf16: the gradients travel as bf16 (half the bytes). Repeatable bit for bit, different
// from the fp32 exchange, and close to it: bf16 keeps 8 bits of mantissa, so each averaged gradient
// moves by at most about 2^-8 of itself, and AdamW's steps by about as much (measured 2.9e-4
// relative after 10 steps; the bar leaves room over it and stays far below a broken exchange, ~1).
TEST(Distributed, Bf16AllReduceIsRepeatableAndCloseToFp32) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  for (const char* run : {"bf16a", "bf16b"}) {
    CliResult r = mpirun(2, concat(train_args(tmp.file("data"), tmp.file(run), 16), {"--allreduce", "bf16"}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  CliResult fp32 = mpirun(2, train_args(tmp.file("data"), tmp.file("fp32"), 16));
  ASSERT_EQ(fp32.exit_code, 0) << fp32.out << fp32.err;
  EXPECT_EQ(read_bytes(tmp.file("bf16a/model.safetensors")), read_bytes(tmp.file("bf16b/model.safetensors")));
  const double d = weights_relative_difference(tmp.file("bf16a/model.safetensors"), tmp.file("fp32/model.safetensors"));
  EXPECT_GT(d, 0.0) << "the bf16 exchange changed nothing";
  EXPECT_LT(d, 1e-2);
  std::ifstream args(tmp.file("bf16a/train_args.json"));
  EXPECT_EQ(nlohmann::json::parse(args)["allreduce"], "bf16");
}

TEST(Distributed, ShardsAreDisjointAndComplete) {
  // Positions: each global batch of world*b is split in rank order, whole batches only in training;
  // every position once in evaluation, however the last global batch falls.
  for (const bool train : {true, false}) {
    for (const int world : {1, 2, 3}) {
      const int64_t n = 103, b = 4;
      std::set<int64_t> seen;
      int64_t total = 0;
      for (int rank = 0; rank < world; ++rank) {
        LoaderOptions o;
        o.batch = b;
        o.rank = rank;
        o.world = world;
        o.drop_last = train;
        const int64_t batches = DataLoader::batches_of_rank(n, o);
        for (int64_t k = 0; k < batches; ++k) {
          const auto [begin, end] = DataLoader::batch_positions(n, o, k);
          if (train) {
            EXPECT_EQ(begin, k * world * b + rank * b);
            EXPECT_EQ(end - begin, b);
          }
          EXPECT_LT(begin, end) << "an empty batch";
          for (int64_t p = begin; p < end; ++p) EXPECT_TRUE(seen.insert(p).second) << "position " << p << " twice";
          total += end - begin;
        }
        if (train) {
          EXPECT_EQ(batches, n / (world * b)) << "ranks must take the same number of steps";
        }
      }
      const int64_t expected = train ? n / (world * b) * world * b : n;
      EXPECT_EQ(total, expected) << "world " << world << (train ? " training" : " evaluation");
      EXPECT_EQ(static_cast<int64_t>(seen.size()), expected);
      ASSERT_FALSE(seen.empty());
      EXPECT_EQ(*seen.rbegin(), expected - 1);
    }
  }
  // Samples: rank 0's and rank 1's batch k at b, one after the other, are one process's batch k at
  // 2b, augmentation included (it is drawn per sample).
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 100, 16);
  DataTransform t;
  t.mean = {0.5f};
  t.std = {0.5f};
  auto ds = open_fashion_mnist(tmp.file("data"), "train", t);
  LoaderOptions whole;
  whole.batch = 16;
  whole.seed = 5;
  whole.epoch = 2;
  whole.workers = 0;
  DataLoader single(*ds, whole);
  std::vector<std::unique_ptr<DataLoader>> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    LoaderOptions o = whole;
    o.batch = 8;
    o.rank = rank;
    o.world = 2;
    ranks.push_back(std::make_unique<DataLoader>(*ds, o));
    EXPECT_EQ(ranks.back()->num_batches(), single.num_batches());
  }
  while (auto g = single.next()) {
    auto r0 = ranks[0]->next(), r1 = ranks[1]->next();
    ASSERT_TRUE(r0 && r1);
    const int64_t per = g->images.numel() / 16;
    for (int64_t i = 0; i < 16; ++i) {
      const Batch& part = i < 8 ? *r0 : *r1;
      const int64_t j = i % 8;
      EXPECT_EQ(part.labels[static_cast<size_t>(j)], g->labels[static_cast<size_t>(i)]);
      for (int64_t k = 0; k < per; ++k)
        ASSERT_EQ(part.images.data()[j * per + k], g->images.data()[i * per + k]) << "sample " << i;
    }
  }
  EXPECT_FALSE(ranks[0]->next() || ranks[1]->next());
}

TEST(Distributed, OnlyRankZeroWrites) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  // Rank 1 is given another run folder (the folder is not among what the ranks must agree on), so
  // that anything it wrote would show there; with the progress bar on (it goes to stderr).
  auto args0 = train_args(tmp.file("data"), tmp.file("run"), 16);
  auto args1 = train_args(tmp.file("data"), tmp.file("rank1"), 16);
  args0.erase(std::find(args0.begin(), args0.end(), "--no-progress"));
  args1.erase(std::find(args1.begin(), args1.end(), "--no-progress"));
  CliResult r = mpirun_two(args0, args1);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_FALSE(fs::exists(tmp.file("rank1"))) << "rank 1 wrote in its run folder";
  for (const char* f : {"config.json", "train_args.json", "metrics.jsonl", "curves.svg", "model.safetensors",
                        "checkpoints/latest", ".lock"})
    EXPECT_TRUE(fs::exists(tmp.file("run/") + f)) << f;
  // One header, one epoch line, one progress bar's last line, one summary.
  EXPECT_EQ(count(r.out, "training fmnist_convformer"), 1u) << r.out;
  EXPECT_EQ(count(r.out, "epoch 1/1:"), 1u) << r.out;
  EXPECT_EQ(count(r.out, "done: 1 epochs"), 1u) << r.out;
  EXPECT_EQ(count(r.err, "10/10"), 1u) << r.err;
}

TEST(Distributed, KillingOneRankEndsTheJob) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  // Rank 1 dies by SIGKILL after step 15, in epoch 2; rank 0 then waits for its gradients.
  setenv("MF_DEBUG_KILL_AT_STEP", "15", 1);
  setenv("MF_DEBUG_KILL_RANK", "1", 1);
  CliResult r = mpirun(2, train_args(tmp.file("data"), tmp.file("run"), 16, 3));
  unsetenv("MF_DEBUG_KILL_AT_STEP");
  unsetenv("MF_DEBUG_KILL_RANK");
  EXPECT_NE(r.exit_code, 0);
  // mpirun ends the job itself, naming the rank and the signal, long before its --timeout would.
  EXPECT_NE(r.err.find("rank 1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("signal 9"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(kTimeLimitMessage), std::string::npos) << "the job hung until mpirun's time limit";
  // Epoch 1's checkpoint is the latest, and intact.
  std::ifstream latest(tmp.file("run/checkpoints/latest"));
  std::string name;
  latest >> name;
  EXPECT_EQ(name, "epoch-0001");
  EXPECT_TRUE(verify_checkpoint_files(tmp.file("run/checkpoints/epoch-0001")).has_value());
  EXPECT_FALSE(fs::exists(tmp.file("run/checkpoints/epoch-0002")));
}

TEST(Distributed, ResumeWithAnotherWorldSize) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  // Reference: one process at the global batch, 3 epochs without interruption.
  CliResult reference = run_cli(train_args(tmp.file("data"), tmp.file("one"), 32, 3));
  ASSERT_EQ(reference.exit_code, 0) << reference.err;
  // 2 ranks at 16, rank 0 killed after step 15: the epoch-1 checkpoint remains.
  setenv("MF_DEBUG_KILL_AT_STEP", "15", 1);
  setenv("MF_DEBUG_KILL_RANK", "0", 1);
  CliResult killed = mpirun(2, train_args(tmp.file("data"), tmp.file("run"), 16, 3));
  unsetenv("MF_DEBUG_KILL_AT_STEP");
  unsetenv("MF_DEBUG_KILL_RANK");
  ASSERT_NE(killed.exit_code, 0);
  // Resumed by one process: it takes the whole global batch of 32.
  CliResult resumed =
      run_cli({"train", "--resume", tmp.file("run"), "--threads", "1", "--workers", "1", "--no-progress"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resuming"), std::string::npos);
  EXPECT_NE(resumed.out.find("steps of 32"), std::string::npos) << resumed.out;
  EXPECT_EQ(metrics(tmp.file("run")).size(), 3u);
  EXPECT_LT(weights_relative_difference(tmp.file("run/model.safetensors"), tmp.file("one/model.safetensors")),
            kRankTolerance);
  // And back to 2 ranks for one more epoch: each rank again takes 16.
  CliResult extended = mpirun(2, {"train", "--resume", tmp.file("run"), "--epochs", "4", "--threads", "1",
                                  "--workers", "1", "--no-progress"});
  ASSERT_EQ(extended.exit_code, 0) << extended.out << extended.err;
  EXPECT_NE(extended.out.find("2 ranks x batch 16 = 32 per step"), std::string::npos) << extended.out;
  EXPECT_EQ(metrics(tmp.file("run")).size(), 4u);
  // 3 ranks cannot share a global batch of 32 evenly: refused with one line.
  CliResult uneven = mpirun(3, {"train", "--resume", tmp.file("run"), "--epochs", "5", "--threads", "1", "--workers",
                                "0", "--no-progress"});
  EXPECT_NE(uneven.exit_code, 0);
  EXPECT_EQ(count(uneven.err, "does not split evenly over 3 ranks"), 1u) << uneven.err;
}

TEST(Distributed, MismatchedRanksAreCaughtAtStart) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  const std::string data = tmp.file("data");
  // Another batch on rank 1: the options differ. Said once, by rank 0, before any step.
  CliResult batch = mpirun_two(train_args(data, tmp.file("a"), 16), train_args(data, tmp.file("a"), 8));
  EXPECT_NE(batch.exit_code, 0);
  EXPECT_EQ(count(batch.err, "the ranks disagree on the training options: rank 1's differs from rank 0's"), 1u)
      << batch.err;
  EXPECT_FALSE(fs::exists(tmp.file("a/checkpoints")));
  // Another model on rank 1 (its drop-path rate is part of the model's description).
  auto other_model = train_args(data, tmp.file("b"), 16);
  *(std::find(other_model.begin(), other_model.end(), "--drop-path") + 1) = "0.1";
  CliResult model = mpirun_two(train_args(data, tmp.file("b"), 16), other_model);
  EXPECT_NE(model.exit_code, 0);
  EXPECT_EQ(count(model.err, "the ranks disagree on the model"), 1u) << model.err;
}

TEST(Distributed, BatchNormStatisticsAreAveragedOverTheRanks) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  // The ConvFormer with BatchNorm: each rank's running statistics come from its own half of every
  // batch. Unaveraged, they would differ between the ranks, and the check that every rank holds the
  // same parameters and buffers before rank 0 writes would stop the run.
  nlohmann::json config = nlohmann::json::parse(read_bytes(kConfig));
  config["norms"] = "batch_norm";
  const std::string text = config.dump();
  write_bytes(tmp.file("bn.json"), std::vector<uint8_t>(text.begin(), text.end()));
  auto args = train_args(tmp.file("data"), tmp.file("run"), 16);
  *(std::find(args.begin(), args.end(), "--config") + 1) = tmp.file("bn.json");
  CliResult r = mpirun(2, args);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const SafeTensors weights = SafeTensors::open(tmp.file("run/model.safetensors"));
  const Tensor mean = weights.load("stages.0.blocks.0.norm1.running_mean");
  double moved = 0;
  for (float v : mean.span()) moved = std::max(moved, static_cast<double>(std::fabs(v)));
  EXPECT_GT(moved, 0.0) << "the running statistics never moved";
}

TEST(Distributed, BuildWithoutMpiRefusesToRunAsOneOfSeveralRanks) {
  if (Distributed::compiled_with_mpi()) GTEST_SKIP() << "this build has MPI";
  // What mpirun tells each process it starts, without mpirun.
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  setenv("OMPI_COMM_WORLD_RANK", "0", 1);
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 16);
  CliResult r = run_cli(train_args(tmp.file("data"), tmp.file("run"), 16));
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("OMPI_COMM_WORLD_RANK");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;
  EXPECT_NE(r.err.find("this build has no MPI"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mf::test
