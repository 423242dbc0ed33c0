// The tables of family_math.h's BicubicAxis, made on the host from the taps the reference backend
// reads (ops/bicubic_taps.h): the CUDA backend uploads them (cuda_family_ops.cpp), the host test of
// the kernels' arithmetic reads them in place (tests/test_family_math.cpp).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "ops/bicubic_taps.h"
#include "ops/cuda/families/family_math.h"

namespace mf::cuda::families {

struct BicubicHostTables {
  int64_t in = 0, out = 0;
  std::vector<int> index, adj_begin, adj_out;
  std::vector<double> weight, adj_weight;
  // A BicubicAxis over these vectors (valid while they live and stay unchanged).
  BicubicAxis view() const {
    return BicubicAxis{in, out, index.data(), weight.data(), adj_begin.data(), adj_out.data(), adj_weight.data()};
  }
};

inline BicubicHostTables bicubic_host_tables(int64_t in, int64_t out) {
  const BicubicTaps taps = bicubic_taps(in, out);
  BicubicHostTables t;
  t.in = in, t.out = out;
  t.index.assign(taps.index.begin(), taps.index.end());
  t.weight = taps.weight;
  // The adjoint: input i receives from every output whose taps land on it. A clamped border index can
  // be several taps of one output: their weights are summed, in tap order.
  std::vector<std::vector<std::pair<int, double>>> from(static_cast<size_t>(in));
  for (int64_t o = 0; o < out; ++o)
    for (int k = 0; k < 4; ++k) {
      auto& list = from[static_cast<size_t>(taps.index[static_cast<size_t>(o * 4 + k)])];
      const double w = taps.weight[static_cast<size_t>(o * 4 + k)];
      if (!list.empty() && list.back().first == o)
        list.back().second += w;
      else
        list.emplace_back(static_cast<int>(o), w);
    }
  t.adj_begin.push_back(0);
  for (const auto& list : from) {
    for (const auto& [o, w] : list) t.adj_out.push_back(o), t.adj_weight.push_back(w);
    t.adj_begin.push_back(static_cast<int>(t.adj_out.size()));
  }
  return t;
}

}  // namespace mf::cuda::families
