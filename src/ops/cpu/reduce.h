// Deterministic parallel reductions for backward passes (parameter gradients are sums over every
// pixel of a batch). Rows are split into a fixed number of chunks, independent of the thread count;
// each chunk sums its rows in order into its own partial, and the partials are added in chunk order.
// The result is therefore the same bits on every run and with any number of threads, which the
// trainer's resume-exactly guarantee relies on (an OpenMP reduction clause combines in whatever
// order threads finish).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace mf::cpu {

constexpr int64_t kReductionChunks = 16;

// fn(T* partial, int64_t row_begin, int64_t row_end) adds its rows' contributions to `partial`
// (`width` values, zeroed). The chunk totals are then added, in order, into out[0..width).
template <typename T, typename F>
void chunked_sum(int64_t rows, int64_t width, T* out, F&& fn) {
  const int64_t chunks = std::max<int64_t>(1, std::min(kReductionChunks, rows));
  std::vector<T> partial(static_cast<size_t>(chunks * width), T(0));
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) fn(partial.data() + c * width, rows * c / chunks, rows * (c + 1) / chunks);
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t i = 0; i < width; ++i) out[i] += partial[static_cast<size_t>(c * width + i)];
}

}  // namespace mf::cpu
