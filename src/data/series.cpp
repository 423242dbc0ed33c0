// Forecasting data (docs/sequences.md, "Forecasting data"): a real-valued series read from a CSV
// file, split by time into train / validation / test (70 / 10 / 20 %, the split of the long-horizon
// forecasting benchmarks), standardised with the training part's per-channel mean and standard
// deviation, and cut into sliding windows of `context` input steps and the `horizon` steps after them.
//
// A window belongs to the part its future lies in; its context may reach back into the part before
// (the validation and test parts start `context` steps early), so no future step is ever seen twice
// and no part loses the windows at its start. Metrics are on the standardised scale, as the
// benchmarks report them.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include <fmt/format.h>

#include "core/error.h"
#include "data/dataset.h"
#include "io/series_csv.h"

namespace mf {

const char* const kStatsmodelsDatasetsDir = "/usr/lib/python3/dist-packages/statsmodels/datasets";

namespace {

// The named series: real data that ships with Debian's python3-statsmodels package (its datasets
// are CSV files), with the column to forecast and how its gaps are treated.
struct NamedSeries {
  const char* name;
  const char* file;    // under kStatsmodelsDatasetsDir
  const char* column;
  const char* what;
  bool interpolate;    // fill empty cells linearly (the data's documented gaps)
};
constexpr NamedSeries kNamedSeries[] = {
    {"co2", "co2/co2.csv", "co2", "weekly atmospheric CO2 at Mauna Loa, 1958-2001 (ppm)", true},
    {"sunspots", "sunspots/sunspots.csv", "SUNACTIVITY", "yearly sunspot activity, 1700-2008", false},
};

// The windows of one part of the standardised series: window i reads steps first + i .. + context
// and predicts the `horizon` steps after them.
class ForecastWindowsData : public Dataset {
 public:
  ForecastWindowsData(std::shared_ptr<const Tensor> series, std::string name, std::string part, int64_t first,
                      int64_t windows, int64_t context, int64_t horizon)
      : series_(std::move(series)), name_(std::move(name)), part_(std::move(part)), first_(first), windows_(windows),
        context_(context), horizon_(horizon) {}
  int64_t size() const override { return windows_; }
  int num_classes() const override { return 0; }
  int channels() const override { return static_cast<int>(series_->dim(1)); }
  int image_size() const override { return static_cast<int>(context_); }
  int64_t sequence_length() const override { return context_; }
  int64_t horizon() const override { return horizon_; }
  std::vector<std::string> class_names() const override { return {}; }
  int64_t label(int64_t) const override { return 0; }
  std::string describe() const override {
    return fmt::format("{} {} ({} windows of {} steps -> {}, {} channel{})", name_, part_, windows_, context_, horizon_,
                       channels(), channels() == 1 ? "" : "s");
  }
  Sample get(int64_t index, bool, Rng&) const override {
    MF_CHECK(index >= 0 && index < windows_, "{}: window {} of {}", name_, index, windows_);
    const int64_t C = series_->dim(1);
    const float* s = series_->data() + (first_ + index) * C;
    Sample out;
    out.image = Tensor::empty({1, context_, C});
    out.target = Tensor::empty({horizon_, C});
    std::copy_n(s, context_ * C, out.image.data());
    std::copy_n(s + context_ * C, horizon_ * C, out.target.data());
    return out;
  }

 private:
  std::shared_ptr<const Tensor> series_;
  std::string name_, part_;
  int64_t first_, windows_, context_, horizon_;
};

}  // namespace

bool is_forecast_spec(const std::string& spec) {
  if (spec.rfind("csv:", 0) == 0) return true;
  const std::string name = spec.substr(0, spec.find(':'));
  for (const auto& n : kNamedSeries)
    if (name == n.name) return !std::filesystem::exists(spec);  // a folder of that name is a folder
  return false;
}

SeriesSplit forecast_split(int64_t steps) {
  SeriesSplit s;
  s.train = static_cast<int64_t>(std::llround(0.7 * static_cast<double>(steps)));
  s.test = static_cast<int64_t>(std::llround(0.2 * static_cast<double>(steps)));
  s.val = steps - s.train - s.test;
  return s;
}

DataSplits open_forecast(const std::string& spec, int64_t context, int64_t horizon) {
  MF_CHECK(context >= 1 && horizon >= 1, "forecasting needs a positive context ({}) and horizon ({})", context, horizon);
  // "NAME" or "csv:PATH", optionally ":val" to evaluate on the validation part instead of the test part.
  std::string body = spec, eval_part = "test";
  if (body.size() > 4 && body.compare(body.size() - 4, 4, ":val") == 0) {
    body.resize(body.size() - 4);
    eval_part = "val";
  } else if (body.size() > 5 && body.compare(body.size() - 5, 5, ":test") == 0) {
    body.resize(body.size() - 5);
  }
  Tensor raw;
  std::string name;
  if (body.rfind("csv:", 0) == 0) {
    const std::string path = body.substr(4);
    MF_CHECK(!path.empty(), "--data csv:PATH needs a path");
    raw = read_series_csv(path, {}, /*interpolate_gaps=*/false);
    name = std::filesystem::path(path).filename().string();
  } else {
    const NamedSeries* named = nullptr;
    for (const auto& n : kNamedSeries)
      if (body == n.name) named = &n;
    MF_CHECK(named, "--data {}: unknown series (named series: co2, sunspots; or csv:PATH)", spec);
    const char* dir_env = std::getenv("METAFORMER_STATSMODELS_DATASETS");
    const std::string path = fmt::format("{}/{}", dir_env && *dir_env ? dir_env : kStatsmodelsDatasetsDir, named->file);
    MF_CHECK(std::filesystem::exists(path), "--data {}: {} is not there; it comes with Debian's python3-statsmodels "
             "(./scripts/deps.sh python3-statsmodels), or give the file as csv:PATH", body, path);
    raw = read_series_csv(path, {named->column}, named->interpolate);
    name = body;
  }
  const int64_t T = raw.dim(0), C = raw.dim(1);
  const SeriesSplit part = forecast_split(T);
  MF_CHECK(part.train >= context + horizon && part.test >= horizon && part.val >= horizon,
           "{}: a series of {} steps is too short for windows of {} context + {} future steps: its parts (train {}, "
           "validation {}, test {} steps) need at least {} + {}, {} and {} steps",
           name, T, context, horizon, part.train, part.val, part.test, context, horizon, horizon, horizon);
  // Standardised with the training part's statistics (float64 sums), so no later step leaks in.
  auto series = std::make_shared<Tensor>(Tensor::empty({T, C}));
  for (int64_t c = 0; c < C; ++c) {
    double mean = 0, var = 0;
    for (int64_t t = 0; t < part.train; ++t) mean += raw.data()[t * C + c];
    mean /= static_cast<double>(part.train);
    for (int64_t t = 0; t < part.train; ++t) {
      const double d = raw.data()[t * C + c] - mean;
      var += d * d;
    }
    const double sd = std::sqrt(var / static_cast<double>(part.train));
    MF_CHECK(sd > 0, "{}: channel {} is constant over the training part; it cannot be standardised", name, c);
    for (int64_t t = 0; t < T; ++t)
      series->data()[t * C + c] = static_cast<float>((raw.data()[t * C + c] - mean) / sd);
  }
  const int64_t val_end = part.train + part.val;
  DataSplits s;
  s.train = std::make_unique<ForecastWindowsData>(series, name, "train", 0, part.train - context - horizon + 1, context,
                                                  horizon);
  if (eval_part == "val")
    s.eval = std::make_unique<ForecastWindowsData>(series, name, "validation", part.train - context,
                                                   part.val - horizon + 1, context, horizon);
  else
    s.eval = std::make_unique<ForecastWindowsData>(series, name, "test", val_end - context, part.test - horizon + 1,
                                                   context, horizon);
  return s;
}

}  // namespace mf
