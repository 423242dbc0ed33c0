// libFuzzer target: the series CSV reader (forecasting data), with and without gap interpolation.
#include <cmath>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "io/series_csv.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool interpolate : {false, true}) {
    try {
      const mf::Tensor t = mf::parse_series_csv(text, "fuzz", {}, interpolate);
      // A series that parses has rows and columns, and every value is finite (gaps filled or refused).
      if (t.ndim() != 2 || t.dim(0) < 1 || t.dim(1) < 1) __builtin_trap();
      for (float v : t.span())
        if (!std::isfinite(v)) __builtin_trap();
    } catch (const mf::Error&) {
    }
  }
  return 0;
}
