// PoNet's multi-granularity pooling and fusion on the CPU (Backend::ponet_pool). Every part is linear
// in the sequence length L: the global aggregation is one pass for the mean query, one for the
// softmax scores and one for the pooled value; each segment's maximum is taken once; the local
// maximum reads a window of `local_kernel` tokens. Threads split (sequence, head) pairs: a head's
// channels of all six projections belong to one thread, so no gradient is written by two threads.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/cpu_backend.h"

namespace mf {

namespace {
struct Ponet {
  const float* P;
  int64_t L, C, heads, hd, segment;
  int local;
  int64_t at(int64_t b, int64_t t, int k, int64_t c) const { return (b * L + t) * 6 * C + k * C + c; }
  // One head's global aggregation: g [hd] (mean query), a [L] (softmax weights), g2 [hd] (pooled value).
  void global(int64_t b, int64_t h, float* g, float* a, float* g2) const {
    const int64_t c0 = h * hd;
    std::fill_n(g, hd, 0.f);
    std::fill_n(g2, hd, 0.f);
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < hd; ++c) g[c] += P[at(b, t, 0, c0 + c)];
    for (int64_t c = 0; c < hd; ++c) g[c] /= static_cast<float>(L);
    const float scale = 1.f / std::sqrt(static_cast<float>(hd));
    float mx = -std::numeric_limits<float>::infinity(), sum = 0;
    for (int64_t t = 0; t < L; ++t) {
      float dot = 0;
      for (int64_t c = 0; c < hd; ++c) dot += g[c] * P[at(b, t, 1, c0 + c)];
      a[t] = dot * scale;
      mx = std::max(mx, a[t]);
    }
    for (int64_t t = 0; t < L; ++t) sum += (a[t] = std::exp(a[t] - mx));
    for (int64_t t = 0; t < L; ++t) {
      a[t] /= sum;
      for (int64_t c = 0; c < hd; ++c) g2[c] += a[t] * P[at(b, t, 2, c0 + c)];
    }
  }
};
}  // namespace

// Both passes walk the tokens in order with a head's channels innermost (contiguous in memory), so a
// long sequence streams through the cache once per part instead of once per channel. Maxima keep
// the first token attaining them (as the reference).
namespace {
// Per channel of head h: the maximum of projection k over tokens [lo, hi) and the token attaining it.
void head_max(const Ponet& k, int64_t b, int proj, int64_t c0, int64_t lo, int64_t hi, float* mx, int64_t* arg) {
  for (int64_t c = 0; c < k.hd; ++c) {
    mx[c] = k.P[k.at(b, lo, proj, c0 + c)];
    arg[c] = lo;
  }
  for (int64_t t = lo + 1; t < hi; ++t) {
    const float* row = k.P + k.at(b, t, proj, c0);
    for (int64_t c = 0; c < k.hd; ++c)
      if (row[c] > mx[c]) {
        mx[c] = row[c];
        arg[c] = t;
      }
  }
}
}  // namespace

void CpuBackend::ponet_pool(const Tensor& p, int heads, int64_t segment, int local_kernel, Tensor& y) {
  const int64_t C = p.dim(2) / 6, L = p.dim(1), Bn = p.dim(0), hd = C / heads;
  const Ponet k{p.data(), L, C, heads, hd, segment, local_kernel};
  float* Y = y.data();
#pragma omp parallel
  {
    std::vector<float> g(static_cast<size_t>(hd)), g2(static_cast<size_t>(hd)), a(static_cast<size_t>(L)),
        smax(static_cast<size_t>(hd)), lmax(static_cast<size_t>(hd));
    std::vector<int64_t> sarg(static_cast<size_t>(hd)), larg(static_cast<size_t>(hd));
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < Bn; ++b)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t c0 = h * hd;
        k.global(b, h, g.data(), a.data(), g2.data());
        for (int64_t lo = 0; lo < L; lo += segment) {
          const int64_t hi = std::min(L, lo + segment);
          head_max(k, b, 4, c0, lo, hi, smax.data(), sarg.data());
          for (int64_t t = lo; t < hi; ++t) {
            head_max(k, b, 5, c0, std::max<int64_t>(0, t - local_kernel / 2), std::min(L, t + local_kernel / 2 + 1),
                     lmax.data(), larg.data());
            const float* o = k.P + k.at(b, t, 3, c0);
            float* out = Y + (b * L + t) * C + c0;
            for (int64_t c = 0; c < hd; ++c) {
              const auto cc = static_cast<size_t>(c);
              out[c] = o[c] * (g2[cc] + smax[cc]) + lmax[cc];
            }
          }
        }
      }
  }
}

void CpuBackend::ponet_pool_backward(const Tensor& p, int heads, int64_t segment, int local_kernel, const Tensor& dy,
                                     Tensor& dp) {
  const int64_t C = p.dim(2) / 6, L = p.dim(1), Bn = p.dim(0), hd = C / heads;
  const Ponet k{p.data(), L, C, heads, hd, segment, local_kernel};
  const float* G = dy.data();
  float* DP = dp.data();
  std::fill(DP, DP + dp.numel(), 0.f);
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
#pragma omp parallel
  {
    std::vector<float> g(static_cast<size_t>(hd)), g2(static_cast<size_t>(hd)), dg2(static_cast<size_t>(hd)),
        dg(static_cast<size_t>(hd)), a(static_cast<size_t>(L)), da(static_cast<size_t>(L)),
        smax(static_cast<size_t>(hd)), lmax(static_cast<size_t>(hd)), dseg(static_cast<size_t>(hd));
    std::vector<int64_t> sarg(static_cast<size_t>(hd)), larg(static_cast<size_t>(hd));
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < Bn; ++b)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t c0 = h * hd;
        k.global(b, h, g.data(), a.data(), g2.data());
        std::fill(dg2.begin(), dg2.end(), 0.f);
        for (int64_t lo = 0; lo < L; lo += segment) {  // fusion and the two maxima
          const int64_t hi = std::min(L, lo + segment);
          head_max(k, b, 4, c0, lo, hi, smax.data(), sarg.data());
          std::fill(dseg.begin(), dseg.end(), 0.f);
          for (int64_t t = lo; t < hi; ++t) {
            head_max(k, b, 5, c0, std::max<int64_t>(0, t - local_kernel / 2), std::min(L, t + local_kernel / 2 + 1),
                     lmax.data(), larg.data());
            const float* gy = G + (b * L + t) * C + c0;
            const float* o = k.P + k.at(b, t, 3, c0);
            float* d_o = DP + k.at(b, t, 3, c0);
            for (int64_t c = 0; c < hd; ++c) {
              const auto cc = static_cast<size_t>(c);
              d_o[c] = gy[c] * (g2[cc] + smax[cc]);
              DP[k.at(b, larg[cc], 5, c0 + c)] += gy[c];
              dseg[cc] += gy[c] * o[c];
            }
          }
          for (int64_t c = 0; c < hd; ++c) {
            const auto cc = static_cast<size_t>(c);
            DP[k.at(b, sarg[cc], 4, c0 + c)] = dseg[cc];
            dg2[cc] += dseg[cc];
          }
        }
        // the global aggregation: g2 = Σ_t a[t] V[t], a = softmax(scale <g, K[t]>), g = mean_t Q[t]
        float dot = 0;
        for (int64_t t = 0; t < L; ++t) {
          float s = 0;
          for (int64_t c = 0; c < hd; ++c) {
            DP[k.at(b, t, 2, c0 + c)] = a[static_cast<size_t>(t)] * dg2[static_cast<size_t>(c)];
            s += dg2[static_cast<size_t>(c)] * k.P[k.at(b, t, 2, c0 + c)];
          }
          da[static_cast<size_t>(t)] = s;
          dot += a[static_cast<size_t>(t)] * s;
        }
        std::fill(dg.begin(), dg.end(), 0.f);
        for (int64_t t = 0; t < L; ++t) {
          const float dscore = a[static_cast<size_t>(t)] * (da[static_cast<size_t>(t)] - dot) * scale;
          for (int64_t c = 0; c < hd; ++c) {
            DP[k.at(b, t, 1, c0 + c)] = dscore * g[static_cast<size_t>(c)];
            dg[static_cast<size_t>(c)] += dscore * k.P[k.at(b, t, 1, c0 + c)];
          }
        }
        for (int64_t t = 0; t < L; ++t)
          for (int64_t c = 0; c < hd; ++c)
            DP[k.at(b, t, 0, c0 + c)] = dg[static_cast<size_t>(c)] / static_cast<float>(L);
      }
  }
}

}  // namespace mf
