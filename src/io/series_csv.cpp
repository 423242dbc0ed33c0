// Series CSV files (io/series_csv.h): a header line, then one row per time step.
#include "io/series_csv.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "io/file.h"

namespace mf {

namespace {

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

}  // namespace

Tensor parse_series_csv(std::string_view text, const std::string& path, const std::vector<std::string>& columns,
                        bool interpolate_gaps) {
  std::istringstream f{std::string(text)};
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

Tensor read_series_csv(const std::string& path, const std::vector<std::string>& columns, bool interpolate_gaps) {
  MF_CHECK(std::filesystem::exists(path), "cannot read {}: no such file", path);
  const std::vector<uint8_t> bytes = read_file(path);
  return parse_series_csv(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path, columns,
                          interpolate_gaps);
}

}  // namespace mf
