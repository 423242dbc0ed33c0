// Forecasting data and training (data/series.cpp, docs/sequences.md "Forecasting data"): the CSV
// reader and its errors, the split by time with its windows and standardisation, and a forecaster
// trained by `metaformer train`, resumed, evaluated and compared through the CLI on a small series.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "io/series_csv.h"
#include "cli_expect.h"
#include "test_util.h"

namespace mf::test {
namespace {

namespace fs = std::filesystem;

void write(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Two channels over `steps` days: a seasonal sine and a slower cosine, with a little noise.
std::string seasonal_csv(int steps) {
  std::string text = "day,a,b\n";
  Rng rng(5);
  for (int t = 0; t < steps; ++t)
    text += fmt::format("{},{:.6f},{:.6f}\n", t, std::sin(t * 0.5) + 0.05 * rng.normal(),
                        2 + std::cos(t * 0.13) + 0.05 * rng.normal());
  return text;
}

TEST(ForecastData, CsvColumnsAndGaps) {
  TempDir dir;
  write(dir.file("s.csv"), "\"date\",\"x\",y\n1,1.0,10\n2,,20\n3,,30\n4,4.0,40\n5,5,\n");
  // Every column after the first; the gaps interpolated linearly, the last one held.
  const Tensor t = read_series_csv(dir.file("s.csv"), {}, true);
  ASSERT_EQ(t.shape(), (Shape{5, 2}));
  const float want[] = {1, 10, 2, 20, 3, 30, 4, 40, 5, 40};
  for (int i = 0; i < 10; ++i) EXPECT_FLOAT_EQ(t.data()[i], want[i]) << i;
  const Tensor y = read_series_csv(dir.file("s.csv"), {"y"}, true);
  ASSERT_EQ(y.shape(), (Shape{5, 1}));
  EXPECT_FLOAT_EQ(y.data()[4], 40.f);
  // Without interpolation a gap is an error naming its line and column.
  const std::string e = error_of([&] { read_series_csv(dir.file("s.csv"), {}, false); });
  EXPECT_NE(e.find("s.csv line 3 column 'x': an empty cell"), std::string::npos) << e;
}

TEST(ForecastData, BadCsvGetsOneClearError) {
  TempDir dir;
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c : {Case{"", "empty file"}, Case{"t\n1\n", "a time column and at least one value column"},
                        Case{"t,x\n", "no rows after the header"}, Case{"t,x\n1,2,3\n", "line 2: 3 cells"},
                        Case{"t,x\n1,abc\n", "'abc' is not a number"}, Case{"t,x\n1,nan\n", "NaN in the series"},
                        Case{"t,x\n1,1e99\n", "not a finite float"}}) {
    write(dir.file("bad.csv"), c.text);
    const std::string e = error_of([&] { open_forecast("csv:" + dir.file("bad.csv"), 4, 2); });
    EXPECT_NE(e.find(c.message), std::string::npos) << c.text << " -> " << e;
  }
  EXPECT_NE(error_of([&] { read_series_csv(dir.file("bad.csv"), {"nope"}, false); }).find("no column 'nope'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { open_forecast("csv:" + dir.file("missing.csv"), 4, 2); }).find("no such file"),
            std::string::npos);
  // A series shorter than its windows need names its parts.
  write(dir.file("short.csv"), seasonal_csv(30));
  const std::string e = error_of([&] { open_forecast("csv:" + dir.file("short.csv"), 24, 4); });
  EXPECT_NE(e.find("too short for windows of 24 context + 4 future steps"), std::string::npos) << e;
  // A named series that is not installed says where it comes from.
  ::setenv("METAFORMER_STATSMODELS_DATASETS", dir.file("nowhere").c_str(), 1);
  const std::string n = error_of([&] { open_forecast("co2", 8, 2); });
  ::unsetenv("METAFORMER_STATSMODELS_DATASETS");
  EXPECT_NE(n.find("python3-statsmodels"), std::string::npos) << n;
}

TEST(ForecastData, SplitByTimeWindowsAndStandardisation) {
  TempDir dir;
  write(dir.file("s.csv"), seasonal_csv(200));
  const SeriesSplit part = forecast_split(200);
  EXPECT_EQ(part.train, 140);
  EXPECT_EQ(part.val, 20);
  EXPECT_EQ(part.test, 40);
  const int64_t L = 16, H = 4;
  DataSplits test = open_forecast("csv:" + dir.file("s.csv"), L, H);
  DataSplits val = open_forecast("csv:" + dir.file("s.csv") + ":val", L, H);
  EXPECT_EQ(test.train->size(), 140 - L - H + 1);
  EXPECT_EQ(test.eval->size(), 40 - H + 1);
  EXPECT_EQ(val.eval->size(), 20 - H + 1);
  EXPECT_EQ(test.train->channels(), 2);
  EXPECT_EQ(test.train->horizon(), H);
  Rng rng(1);
  // The windows tile the standardised series: window i's future starts where window i + H's context
  // ends, and the first test future is step 160, the last ends at step 200; the training part's mean
  // is 0 and its variance 1 per channel.
  const Tensor raw = read_series_csv(dir.file("s.csv"), {}, false);
  double mean[2] = {0, 0}, var[2] = {0, 0};
  for (int t = 0; t < 140; ++t)
    for (int c = 0; c < 2; ++c) mean[c] += raw.data()[t * 2 + c] / 140.0;
  for (int t = 0; t < 140; ++t)
    for (int c = 0; c < 2; ++c) var[c] += std::pow(raw.data()[t * 2 + c] - mean[c], 2) / 140.0;
  auto standard = [&](int t, int c) { return (raw.data()[t * 2 + c] - mean[c]) / std::sqrt(var[c]); };
  const Sample first_test = test.eval->get(0, false, rng);
  ASSERT_EQ(first_test.image.shape(), (Shape{1, L, 2}));
  ASSERT_EQ(first_test.target.shape(), (Shape{H, 2}));
  EXPECT_NEAR(first_test.target.data()[0], standard(160, 0), 1e-5);
  EXPECT_NEAR(first_test.image.data()[0], standard(160 - L, 0), 1e-5);
  const Sample last_test = test.eval->get(test.eval->size() - 1, false, rng);
  EXPECT_NEAR(last_test.target.data()[(H - 1) * 2 + 1], standard(199, 1), 1e-5);
  const Sample first_val = val.eval->get(0, false, rng);
  EXPECT_NEAR(first_val.target.data()[1], standard(140, 1), 1e-5);
  const Sample last_train = test.train->get(test.train->size() - 1, false, rng);
  EXPECT_NEAR(last_train.target.data()[(H - 1) * 2], standard(139, 0), 1e-5);
  // The loader stacks the targets beside the inputs.
  LoaderOptions lo;
  lo.batch = 8;
  lo.workers = 0;
  DataLoader loader(*test.train, lo);
  const auto b = loader.next();
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->images.shape(), (Shape{8, 1, L, 2}));
  EXPECT_EQ(b->targets.shape(), (Shape{8, H, 2}));
}

constexpr const char* kForecasterConfig = R"({
  "name": "fc", "in_chans": 2, "depths": [1], "dims": [16], "layout": "isotropic",
  "mixers": "time_mlp", "norms": {"type": "layer_norm", "eps": 1e-5},
  "mlp": {"act": "gelu", "bias": true, "ratio": 2},
  "head": {"type": "forecast", "horizon": 4},
  "sequence": {"input": "series", "length": 16, "patch_size": 4, "patch_stride": 4, "channels": "independent",
               "scaling": "std"}
})";

TEST(ForecastData, TrainResumeEvalAndCompareThroughTheCli) {
  TempDir dir;
  write(dir.file("s.csv"), seasonal_csv(300));
  write(dir.file("fc.json"), kForecasterConfig);
  const std::string data = "csv:" + dir.file("s.csv");
  auto train = [&](const std::string& out, const char* epochs) {
    return run_cli({"train", "--config", dir.file("fc.json"), "--data", data, "--epochs", epochs, "--batch", "16",
                    "--lr", "3e-3", "--warmup-epochs", "0", "--threads", "1", "--no-progress", "--out", out});
  };
  CliResult r = train(dir.file("full"), "3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("test MSE"), std::string::npos) << r.out;
  // The metrics record the test MSE and MAE per epoch, and the MSE falls.
  std::vector<nlohmann::json> rows;
  std::istringstream lines(slurp(dir.file("full/metrics.jsonl")));
  for (std::string line; std::getline(lines, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_LT(rows[2]["mse"].get<double>(), rows[0]["mse"].get<double>());
  EXPECT_GT(rows[2]["mae"].get<double>(), 0);
  EXPECT_FALSE(rows[0].contains("top1"));

  // Killed in the third epoch (after step 25 of 33), then resumed: the same weights as the run that
  // was not interrupted, bit for bit.
  ::setenv("MF_DEBUG_KILL_AT_STEP", "25", 1);
  const CliResult killed = train(dir.file("part"), "3");
  ::unsetenv("MF_DEBUG_KILL_AT_STEP");
  ASSERT_NE(killed.exit_code, 0);
  CliResult resumed = run_cli({"train", "--resume", dir.file("part"), "--threads", "1", "--no-progress"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resuming"), std::string::npos) << resumed.out;
  EXPECT_TRUE(slurp(dir.file("part/model.safetensors")) == slurp(dir.file("full/model.safetensors")));

  // eval prints the MSE the last epoch recorded.
  CliResult ev = run_cli({"eval", "--config", dir.file("fc.json"), "--weights", dir.file("full/model.safetensors"),
                          "--data", data});
  ASSERT_EQ(ev.exit_code, 0) << ev.err;
  EXPECT_NE(ev.out.find(fmt::format("MSE {:.4f}", rows[2]["mse"].get<double>())), std::string::npos) << ev.out;

  // compare ranks forecasters by test MSE, lowest first, and plots the MSE.
  const std::string out = dir.file("cmp");
  CliResult c = run_cli({"compare", "--base", dir.file("fc.json"), "--mixers", "identity,time_mlp", "--data", data,
                         "--epochs", "2", "--batch", "16", "--seeds", "1", "--threads", "1", "--latency-runs", "2",
                         "--throughput-runs", "1", "--no-progress", "--out", out});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const std::string report = slurp(out + "/report.md");
  EXPECT_NE(report.find("| MSE | MAE |"), std::string::npos) << report;
  EXPECT_NE(report.find("Ranking by mean test MSE (lowest first):"), std::string::npos) << report;
  const auto results = nlohmann::json::parse(slurp(out + "/results.json"));
  ASSERT_EQ(results["mixers"].size(), 2u);
  const auto& best = results["mixers"][0]["mse_mean"].get<double>() <= results["mixers"][1]["mse_mean"].get<double>()
                         ? results["mixers"][0] : results["mixers"][1];
  EXPECT_NE(report.find(fmt::format("Best: {}", best["mixer"].get<std::string>())), std::string::npos) << report;
  for (const char* plot : {"mse_vs_macs.svg", "mse_vs_latency.svg", "curves.svg"})
    EXPECT_NE(slurp(out + "/" + plot).find("MSE"), std::string::npos) << plot;

  // A classifier on a series, and a forecaster on classification data, are one line each.
  expect_clean_failure(run_cli({"train", "--config", source_path("configs/compare_listops.json"), "--data", data,
                                "--out", dir.file("x")}),
                       "is a forecasting task");
  expect_clean_failure(run_cli({"train", "--config", dir.file("fc.json"), "--data", "listops-64", "--out",
                                dir.file("z")}),
                       "token-sequence task");
}

}  // namespace
}  // namespace mf::test
