// metaformer compare (a tiny run: two mixers, two seeds, a few dozen steps; reuse of runs only under
// the same settings; every mixer checked before training; the budget in the report) and the
// synthetic long-range task.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/rng.h"
#include "data/dataset.h"
#include "ops/backend.h"
#include "test_util.h"

namespace mf::test {
namespace {

namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> compare_args(const std::string& out) {
  return {"compare", "--base", source_path("configs/fmnist_convformer.json"), "--mixers", "identity,pooling",
          "--data", "fashion-mnist", "--epochs", "2", "--batch", "32", "--subset", "320", "--eval-subset", "200",
          "--seeds", "2", "--threads", "2", "--latency-runs", "3", "--throughput-runs", "1", "--no-progress",
          "--out", out};
}

TEST(Compare, TinyComparisonWritesAReportThatParsesAndResumes) {
  if (!fs::exists(kDebianFashionMnistDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TempDir tmp;
  const std::string out = tmp.file("cmp");
  CliResult r = run_cli(compare_args(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;

  const std::string report = slurp(out + "/report.md");
  EXPECT_NE(report.find("| rank | mixer | params (M) | MACs (M) | top-1 (%)"), std::string::npos) << report;
  EXPECT_NE(report.find("| identity |"), std::string::npos) << report;
  EXPECT_NE(report.find("| pooling |"), std::string::npos) << report;
  EXPECT_NE(report.find("Ranking by mean top-1 (%):"), std::string::npos) << report;

  const auto results = nlohmann::json::parse(slurp(out + "/results.json"));
  ASSERT_EQ(results["mixers"].size(), 2u);
  ASSERT_EQ(results["runs"].size(), 4u);
  for (const auto& m : results["mixers"]) {
    EXPECT_GT(m["params"].get<double>(), 0);
    EXPECT_GT(m["macs"].get<double>(), 0);
    EXPECT_GT(m["latency_ms"].get<double>(), 0);
    EXPECT_EQ(m["top1"].size(), 2u);
  }
  for (const char* plot : {"accuracy_vs_macs.svg", "accuracy_vs_latency.svg", "curves.svg"}) {
    const std::string svg = slurp(out + "/" + plot);
    EXPECT_EQ(svg.rfind("<svg", 0), 0u) << plot;
    EXPECT_NE(svg.find("</svg>"), std::string::npos) << plot;
    EXPECT_NE(svg.find("top-1"), std::string::npos) << plot << ": axis label";
  }

  // Repeating the command skips the finished runs and reproduces the report's numbers.
  CliResult again = run_cli(compare_args(out));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("done earlier, skipped"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(slurp(out + "/results.json"))["mixers"], results["mixers"]);

  // A fresh run of the same command gives the same accuracies (deterministic training).
  CliResult fresh = run_cli(compare_args(tmp.file("cmp2")));
  ASSERT_EQ(fresh.exit_code, 0) << fresh.err;
  const auto results2 = nlohmann::json::parse(slurp(tmp.file("cmp2/results.json")));
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(results2["mixers"][i]["top1"], results["mixers"][i]["top1"]);
}

TEST(Compare, BadMixerListsAreOneClearError) {
  TempDir tmp;
  CliResult r = run_cli({"compare", "--base", source_path("configs/fmnist_convformer.json"), "--mixers",
                         "pooling+sepconv", "--data", "fashion-mnist", "--out", tmp.file("x")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("one per stage"), std::string::npos) << r.err;
  r = run_cli({"compare", "--base", source_path("configs/fmnist_convformer.json"), "--mixers", "poolng", "--data",
               "fashion-mnist", "--out", tmp.file("y")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("unknown token mixer 'poolng'"), std::string::npos) << r.err;
  // AFFNet's own network (layout affnet) has no token mixers to swap.
  r = run_cli({"compare", "--model", "affnet_et", "--mixers", "aff,aff_bn", "--data", "fashion-mnist", "--out",
               tmp.file("z")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("affnet_et is AFFNet's own network"), std::string::npos) << r.err;
}

// A comparison small enough to take about a second: the two-block long-range model, `batch`-sized
// steps over `subset` generated images, on one thread and without loader threads (steps this small
// are dominated by thread hand-offs, which a busy machine makes slow).
std::vector<std::string> tiny_compare_args(const std::string& out, const std::string& mixers, int epochs,
                                           const std::vector<std::string>& extra = {}, int subset = 64,
                                           int batch = 16, int seeds = 1) {
  std::vector<std::string> args{"compare", "--base", source_path("configs/compare_long_range.json"), "--mixers",
                                mixers, "--data", "long-range", "--epochs", std::to_string(epochs), "--batch",
                                std::to_string(batch), "--subset", std::to_string(subset), "--eval-subset", "32",
                                "--seeds", std::to_string(seeds), "--threads", "1", "--workers", "0", "--latency-runs", "1",
                                "--throughput-runs", "1", "--no-progress", "--out", out};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

int64_t epochs_trained_with(const std::string& run_dir) {
  return nlohmann::json::parse(slurp(run_dir + "/train_args.json"))["epochs"].get<int64_t>();
}

TEST(Compare, ReusesOnlyRunsTrainedWithTheSameSettings) {
  TempDir tmp;
  const std::string out = tmp.file("cmp");
  // identity trained for 1 epoch, pooling for 2, into the same folder.
  CliResult r = run_cli(tiny_compare_args(out, "identity", 1));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli(tiny_compare_args(out, "pooling", 2));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string identity_dir = out + "/runs/identity/seed0", pooling_dir = out + "/runs/pooling/seed0";
  const std::string pooling_result = slurp(pooling_dir + "/result.json");

  // A request for 2 epochs must not pass the 1-epoch identity run off as its own: one line naming the
  // first difference, exit 1, nothing trained.
  r = run_cli(tiny_compare_args(out, "identity,pooling", 2));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "metaformer: error: " + identity_dir +
                       " was trained with epochs=1, this request has epochs=2; use a new --out or --force to retrain\n");
  EXPECT_EQ(r.out.find("== "), std::string::npos) << r.out;
  EXPECT_EQ(epochs_trained_with(identity_dir), 1);
  // Another schedule is a difference too, named with its values.
  r = run_cli(tiny_compare_args(out, "pooling", 2, {"--lr", "0.001"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(pooling_dir + " was trained with lr=0.002, this request has lr=0.001;"), std::string::npos)
      << r.err;

  // --force retrains the mismatching identity run and keeps the matching pooling run.
  r = run_cli(tiny_compare_args(out, "identity,pooling", 2, {"--force"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(identity_dir + " was trained with epochs=1, this request has epochs=2; retraining it (--force)"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("== identity seed 0\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("== pooling seed 0: done earlier, skipped"), std::string::npos) << r.out;
  EXPECT_EQ(epochs_trained_with(identity_dir), 2);
  EXPECT_EQ(slurp(pooling_dir + "/result.json"), pooling_result);

  // The same settings again: both runs are reused as they are.
  const std::string identity_result = slurp(identity_dir + "/result.json");
  r = run_cli(tiny_compare_args(out, "identity,pooling", 2));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("== identity seed 0: done earlier, skipped"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("== pooling seed 0: done earlier, skipped"), std::string::npos) << r.out;
  EXPECT_EQ(slurp(identity_dir + "/result.json"), identity_result);
  EXPECT_EQ(slurp(pooling_dir + "/result.json"), pooling_result);

  // An interrupted run (killed in epoch 2 of 2, after the epoch-1 checkpoint) is resumed only under
  // its own settings: a 3-epoch request must not continue it.
  const std::string killed_out = tmp.file("killed");
  setenv("MF_DEBUG_KILL_AT_STEP", "6", 1);
  r = run_cli(tiny_compare_args(killed_out, "pooling", 2));
  unsetenv("MF_DEBUG_KILL_AT_STEP");
  ASSERT_EQ(r.exit_code, 128 + SIGKILL) << r.err;
  r = run_cli(tiny_compare_args(killed_out, "pooling", 3));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("runs/pooling/seed0 was trained with epochs=2, this request has epochs=3;"), std::string::npos)
      << r.err;
  r = run_cli(tiny_compare_args(killed_out, "pooling", 2));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("== pooling seed 0 (resuming)"), std::string::npos) << r.out;
  EXPECT_EQ(nlohmann::json::parse(slurp(killed_out + "/results.json"))["runs"][0]["top1"],
            nlohmann::json::parse(pooling_result)["top1"])
      << "the resumed run ends where the uninterrupted one did";
}

TEST(Compare, EveryMixerIsCheckedBeforeAnyTraining) {
  TempDir tmp;
  const std::string out = tmp.file("cmp");
  // The misspelt mixer comes after a good one: the good one must not be trained first.
  CliResult r = run_cli(tiny_compare_args(out, "pooling,poolng", 1));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("'poolng' cannot be built: unknown token mixer 'poolng'"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("== pooling"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out)) << "nothing is written before every mixer is known to build";

  // A candidate listed twice would share its run folders.
  r = run_cli(tiny_compare_args(out, "pooling,identity,pooling", 1));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--mixers names 'pooling' twice"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
}

// --timing-backend cuda: on a machine without a GPU one clear line before anything is trained; with
// a GPU the report and every result say which backend timed them.
TEST(Compare, TimingOnTheGpuIsCheckedFirstAndReported) {
  TempDir tmp;
  const std::string out = tmp.file("cmp");
  CliResult r = run_cli(tiny_compare_args(out, "pooling", 1, {"--timing-backend", "cuda", "--timing-dtype", "bf16"}));
  if (gpu_count() == 0) {
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("cuda"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out)) << "nothing is trained before the timing backend is known to work";
    return;
  }
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(slurp(out + "/report.md").find("(backend cuda bf16)"), std::string::npos);
  const auto results = nlohmann::json::parse(slurp(out + "/results.json"));
  EXPECT_NE(results.dump().find("\"timing\":\"cuda bf16\""), std::string::npos);
}

// --backend cuda trains every run on the GPU (and times there unless --timing-backend says
// otherwise). Without a GPU, or with --matmul or --dtype bf16 on the CPU, one clear line before anything
// is written; with one, a mixer the GPU cannot train (here MS-MLP's spatial shift) is named before the
// first run.
TEST(Compare, TrainingOnTheGpuIsCheckedFirst) {
  TempDir tmp;
  const std::string out = tmp.file("cmp");
  CliResult r = run_cli(tiny_compare_args(out, "pooling", 1, {"--matmul", "bf16"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("--matmul bf16 applies to --backend cuda"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  r = run_cli(tiny_compare_args(out, "pooling", 1, {"--dtype", "bf16"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("--dtype bf16 trains with bf16 activations on --backend cuda"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));

  r = run_cli(tiny_compare_args(out, "pooling", 1, {"--backend", "cuda"}));
  if (gpu_count() == 0) {
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("cuda"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out)) << "nothing is trained before the backend is known to work";
    return;
  }
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(slurp(out + "/report.md").find("(backend cuda fp32)"), std::string::npos);
  EXPECT_NE(slurp(out + "/report.md").find("--backend cuda"), std::string::npos);
  const auto args = nlohmann::json::parse(slurp(out + "/runs/pooling/seed0/train_args.json"));
  EXPECT_EQ(args["backend"], "cuda");

  // Every op has a CUDA kernel; METAFORMER_CUDA_FAMILY_OPS=0 withdraws MS-MLP's spatial shift (the
  // child process reads it), which makes a mixer the GPU cannot train.
  const std::string out2 = tmp.file("cmp2");
  setenv("METAFORMER_CUDA_FAMILY_OPS", "0", 1);
  r = run_cli(tiny_compare_args(out2, "pooling,mix_shift", 1, {"--backend", "cuda"}));
  unsetenv("METAFORMER_CUDA_FAMILY_OPS");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("'mix_shift'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("spatial_shift"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out2));
}

TEST(Compare, ReportStatesTheBudgetAndWhatItCannotShow) {
  TempDir tmp;
  // One seed and 4 steps (64 images in batches of 16): the report says so and what that cannot show.
  const std::string out = tmp.file("small");
  CliResult r = run_cli(tiny_compare_args(out, "identity,pooling", 1));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string report = slurp(out + "/report.md");
  const std::string budget =
      "Budget:** 4 optimizer steps per run (batch 16; 1 epoch over 64 of 20000 training images), 1 seed per mixer, "
      "top-1 on 32 of 4000 test images.";
  EXPECT_NE(report.find("**" + budget), std::string::npos) << report;
  EXPECT_LT(report.find(budget), report.find("Ranking by mean top-1")) << "the budget stands before the ranking";
  EXPECT_NE(report.find("**Caveat:** one seed per mixer and only 4 steps per run"), std::string::npos) << report;
  EXPECT_NE(report.find("the ranking cannot show differences smaller than the seed noise"), std::string::npos)
      << report;
  // The printed table carries the same budget and caveat.
  EXPECT_NE(r.out.find("Budget: 4 optimizer steps per run"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Caveat: one seed per mixer"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rank  mixer"), std::string::npos) << r.out;
  const auto results = nlohmann::json::parse(slurp(out + "/results.json"));
  EXPECT_EQ(results["budget"]["steps_per_run_min"], 4);
  EXPECT_EQ(results["budget"]["seeds"], 1);
  EXPECT_EQ(results["budget"]["train_images"], 64);
  EXPECT_TRUE(results.contains("caveat"));

  // Two seeds of 100 steps (200 images in batches of 2): budget stated, no caveat.
  const std::string out2 = tmp.file("enough");
  r = run_cli(tiny_compare_args(out2, "identity", 1, {}, 200, 2, 2));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string report2 = slurp(out2 + "/report.md");
  EXPECT_NE(report2.find("**Budget:** 100 optimizer steps per run (batch 2; 1 epoch over 200 of 20000 training "
                         "images), 2 seeds per mixer"),
            std::string::npos) << report2;
  EXPECT_EQ(report2.find("Caveat"), std::string::npos) << report2;
  EXPECT_EQ(r.out.find("Caveat"), std::string::npos) << r.out;
}

TEST(LongRange, SamplesAreDeterministicAndBalanced) {
  DataSplits s = open_long_range(2000, 400);
  ASSERT_EQ(s.train->size(), 2000);
  ASSERT_EQ(s.eval->size(), 400);
  EXPECT_EQ(s.train->num_classes(), 2);
  Rng rng(1);
  int positives = 0;
  for (int64_t i = 0; i < 2000; ++i) positives += static_cast<int>(s.train->label(i));
  EXPECT_GT(positives, 900);
  EXPECT_LT(positives, 1100);
  for (int64_t i = 0; i < 20; ++i) {
    Sample a = s.train->get(i, true, rng), b = s.train->get(i, false, rng);
    ASSERT_EQ(a.image.shape(), (Shape{32, 32, 1}));
    EXPECT_EQ(a.label, s.train->label(i));
    for (int64_t k = 0; k < a.image.numel(); ++k) ASSERT_EQ(a.image.data()[k], b.image.data()[k]);
    // One mark in each half: ink on both sides, none in the middle columns.
    double left = 0, right = 0, middle = 0;
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) {
        const double ink = std::abs(a.image.data()[y * 32 + x]) > 0.5f ? 1 : 0;
        (x < 10 ? left : x >= 22 ? right : middle) += ink;
      }
    EXPECT_GT(left, 0) << "sample " << i;
    EXPECT_GT(right, 0) << "sample " << i;
    EXPECT_EQ(middle, 0) << "sample " << i;
  }
  // Train and test are different images.
  Sample t0 = s.train->get(0, false, rng), e0 = s.eval->get(0, false, rng);
  double diff = 0;
  for (int64_t k = 0; k < t0.image.numel(); ++k) diff += std::abs(t0.image.data()[k] - e0.image.data()[k]);
  EXPECT_GT(diff, 1.0);
}

}  // namespace
}  // namespace mf::test
