// metaformer compare (a tiny run: two mixers, two seeds, a few dozen steps) and the synthetic
// long-range task.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/rng.h"
#include "data/dataset.h"
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
