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
#include <fstream>
#include <memory>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"
#include "data/dataset.h"
#include "io/file.h"

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

std::string trim(std::string s) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, ',')) cells.push_back(trim(cell));
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}

bool is_nan_text(const std::string& s) {
  std::string l;
  for (char c : s) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return l == "nan" || l == "na" || l == "-nan";
}

// Linear interpolation over the NaN runs of one channel; a run at either end takes the nearest value.
void fill_gaps(std::vector<float>& v, int64_t T, int64_t C, int64_t c) {
  int64_t last = -1;
  for (int64_t t = 0; t <= T; ++t) {
    if (t < T && std::isnan(v[static_cast<size_t>(t * C + c)])) continue;
    if (t > last + 1) {  // steps last+1 .. t-1 are a gap
      for (int64_t g = last + 1; g < t; ++g) {
        float value;
        if (last < 0 && t == T) value = 0.f;  // unreachable: a column of only gaps is refused earlier
        else if (last < 0) value = v[static_cast<size_t>(t * C + c)];
        else if (t == T) value = v[static_cast<size_t>(last * C + c)];
        else {
          const double a = static_cast<double>(g - last) / static_cast<double>(t - last);
          value = static_cast<float>((1 - a) * v[static_cast<size_t>(last * C + c)] + a * v[static_cast<size_t>(t * C + c)]);
        }
        v[static_cast<size_t>(g * C + c)] = value;
      }
    }
    last = t;
  }
}

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

Tensor read_series_csv(const std::string& path, const std::vector<std::string>& columns, bool interpolate_gaps) {
  std::ifstream f(path);
  MF_CHECK(f.good(), "cannot read {}: {}", path, std::filesystem::exists(path) ? "permission denied" : "no such file");
  std::string line;
  MF_CHECK(static_cast<bool>(std::getline(f, line)), "{}: empty file (a series CSV has a header line)", path);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  const std::vector<std::string> header = split_csv_line(line);
  // Which columns: the named ones, or every one after the first (the time stamp).
  std::vector<size_t> picked;
  if (columns.empty()) {
    MF_CHECK(header.size() >= 2, "{}: the header names {} column(s); a series CSV has a time column and at least one "
             "value column", path, header.size());
    for (size_t i = 1; i < header.size(); ++i) picked.push_back(i);
  } else {
    for (const auto& name : columns) {
      const auto it = std::find(header.begin(), header.end(), name);
      MF_CHECK(it != header.end(), "{}: no column '{}' in its header", path, name);
      picked.push_back(static_cast<size_t>(it - header.begin()));
    }
  }
  const auto C = static_cast<int64_t>(picked.size());
  std::vector<float> values;
  int64_t T = 0;
  for (int64_t line_no = 2; std::getline(f, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    const std::vector<std::string> cells = split_csv_line(line);
    MF_CHECK(cells.size() == header.size(), "{} line {}: {} cells, the header has {}", path, line_no, cells.size(),
             header.size());
    for (size_t i : picked) {
      const std::string& cell = cells[i];
      float v = NAN;
      if (cell.empty() || is_nan_text(cell)) {
        MF_CHECK(interpolate_gaps, "{} line {} column '{}': {} in the series (fill or drop it first)", path, line_no,
                 header[i], cell.empty() ? "an empty cell" : "NaN");
      } else {
        char* end = nullptr;
        const double d = std::strtod(cell.c_str(), &end);
        MF_CHECK(end && *end == '\0', "{} line {} column '{}': '{}' is not a number", path, line_no, header[i], cell);
        MF_CHECK(std::isfinite(d) && std::fabs(d) < 3e38, "{} line {} column '{}': {} is not a finite float", path,
                 line_no, header[i], cell);
        v = static_cast<float>(d);
      }
      values.push_back(v);
    }
    ++T;
  }
  MF_CHECK(T >= 1, "{}: no rows after the header", path);
  for (int64_t c = 0; c < C; ++c) {
    bool any = false;
    for (int64_t t = 0; t < T && !any; ++t) any = !std::isnan(values[static_cast<size_t>(t * C + c)]);
    MF_CHECK(any, "{}: column '{}' has no values", path, header[picked[static_cast<size_t>(c)]]);
    if (interpolate_gaps) fill_gaps(values, T, C, c);
  }
  Tensor out = Tensor::empty({T, C});
  std::copy(values.begin(), values.end(), out.data());
  return out;
}

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
