// Series CSV files for forecasting (data/series.cpp, docs/sequences.md): a header line naming the
// columns, then one row per time step; numbers as strtod reads them, quoted header names allowed.
// Every malformed file is one mf::Error naming the file, the line and the column.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace mf {

// The series [T, C] of `columns` (every column after the first, the time stamp, when empty). Empty
// and NaN cells are an error, or with `interpolate_gaps` filled linearly between their neighbours
// (a gap at either end takes the nearest value).
Tensor read_series_csv(const std::string& path, const std::vector<std::string>& columns, bool interpolate_gaps);
// The same from the file's bytes; `path` names it in messages (the fuzz target's entry point).
Tensor parse_series_csv(std::string_view text, const std::string& path, const std::vector<std::string>& columns,
                        bool interpolate_gaps);

}  // namespace mf
