// Index tables that the paper networks' and sequence models' CUDA kernels read, made on the host: the
// CUDA backend uploads them (cuda_family_ops.cpp), the host test of the kernels' arithmetic reads
// them in place (tests/test_family_math.cpp).
//   - family_math.h's BicubicAxis, from the taps the reference backend reads (ops/bicubic_taps.h);
//   - the positions of each token id, for the embedding's deterministic gradient.
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

// The positions of each id of ids (n exact integers in [0, V)) in increasing order: those of id v
// are order[begin[v] .. begin[v + 1]) (a counting sort).
struct TokenRows {
  std::vector<int> begin, order;
};
inline TokenRows token_rows(const float* ids, int64_t n, int64_t V) {
  TokenRows t;
  t.begin.assign(static_cast<size_t>(V + 1), 0);
  for (int64_t i = 0; i < n; ++i) ++t.begin[static_cast<size_t>(ids[i]) + 1];
  for (int64_t v = 0; v < V; ++v) t.begin[static_cast<size_t>(v + 1)] += t.begin[static_cast<size_t>(v)];
  t.order.resize(static_cast<size_t>(n));
  std::vector<int> next(t.begin.begin(), t.begin.end() - 1);
  for (int64_t i = 0; i < n; ++i)
    t.order[static_cast<size_t>(next[static_cast<size_t>(ids[i])]++)] = static_cast<int>(i);
  return t;
}

}  // namespace mf::cuda::families
