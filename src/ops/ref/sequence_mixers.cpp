// Reference kernels of the sequence mixers built on sequence ops of their own (docs/sequences.md):
// Hydra's bidirectional scan and PoNet's pooling. Plain loops in double, written from the formulas
// in backend.h independently of the cpu kernels: the bidirectional scan keeps every state of both
// directions of one (sequence, channel) and writes each direction's adjoint recurrence out in token
// order (the cpu kernel runs one shared, direction-agnostic scan with checkpoints instead).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/ref/ref_backend.h"

namespace mf {

namespace {
double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }
double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// Both directions' states of one (sequence b, channel d): F[t] (forward, through token t) and
// G[t] (backward, from token t to the end), N values each, with F[-1] = G[L] = 0 stored as rows 0
// and L + 1: F at fs[(t + 1) N], G at gs[t N] (gs has L + 1 rows, the last zero).
struct BiStates {
  std::vector<double> fs, gs, A, dtf, dtb;
};

struct BiView {
  const Tensor &u, &dt_raw, &a_log, &bc;
  int64_t b_offset;
  int64_t L, D, N, W;
  double x(int64_t b, int64_t t, int64_t d) const { return u.data()[(b * L + t) * D + d]; }
  const float* bcp(int64_t b, int64_t t, int k) const { return bc.data() + (b * L + t) * W + b_offset + k * N; }
  double raw(int64_t b, int64_t t, int dir, int64_t d) const {
    return dt_raw.data()[(b * L + t) * 2 * D + dir * D + d];
  }
  void states(int64_t b, int64_t d, BiStates& s) const {
    s.fs.assign(static_cast<size_t>((L + 1) * N), 0.0);
    s.gs.assign(static_cast<size_t>((L + 1) * N), 0.0);
    s.A.resize(static_cast<size_t>(N));
    s.dtf.resize(static_cast<size_t>(L));
    s.dtb.resize(static_cast<size_t>(L));
    for (int64_t k = 0; k < N; ++k) s.A[static_cast<size_t>(k)] = -std::exp(static_cast<double>(a_log.data()[d * N + k]));
    for (int64_t t = 0; t < L; ++t) {
      s.dtf[static_cast<size_t>(t)] = softplus(raw(b, t, 0, d));
      s.dtb[static_cast<size_t>(t)] = softplus(raw(b, t, 1, d));
    }
    for (int64_t t = 0; t < L; ++t) {
      const double dt = s.dtf[static_cast<size_t>(t)];
      const float* Bf = bcp(b, t, 0);
      for (int64_t k = 0; k < N; ++k)
        s.fs[static_cast<size_t>((t + 1) * N + k)] =
            std::exp(dt * s.A[static_cast<size_t>(k)]) * s.fs[static_cast<size_t>(t * N + k)] + dt * Bf[k] * x(b, t, d);
    }
    for (int64_t t = L - 1; t >= 0; --t) {
      const double dt = s.dtb[static_cast<size_t>(t)];
      const float* Bb = bcp(b, t, 2);
      for (int64_t k = 0; k < N; ++k)
        s.gs[static_cast<size_t>(t * N + k)] =
            std::exp(dt * s.A[static_cast<size_t>(k)]) * s.gs[static_cast<size_t>((t + 1) * N + k)] +
            dt * Bb[k] * x(b, t, d);
    }
  }
};
}  // namespace

void RefBackend::bidirectional_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                    int64_t b_offset, const Tensor& dd, const Tensor& d_skip, Tensor& y) {
  const BiView v{u, dt_raw, a_log, bc, b_offset, u.dim(1), u.dim(2), a_log.dim(1), bc.dim(2)};
  const int64_t L = v.L, D = v.D, N = v.N, H = dd.dim(2);
  BiStates s;
  for (int64_t b = 0; b < u.dim(0); ++b)
    for (int64_t d = 0; d < D; ++d) {
      v.states(b, d, s);
      const int64_t h = d / (D / H);
      for (int64_t t = 0; t < L; ++t) {
        double acc = v.x(b, t, d) * (static_cast<double>(dd.data()[(b * L + t) * H + h]) + d_skip.data()[h]);
        if (t > 0)  // the forward scan's state through t - 1, read by C_f[t - 1]
          for (int64_t k = 0; k < N; ++k) acc += s.fs[static_cast<size_t>(t * N + k)] * v.bcp(b, t - 1, 1)[k];
        if (t < L - 1)  // the backward scan's state from t + 1, read by C_b[t + 1]
          for (int64_t k = 0; k < N; ++k) acc += s.gs[static_cast<size_t>((t + 1) * N + k)] * v.bcp(b, t + 1, 3)[k];
        y.data()[(b * L + t) * D + d] = static_cast<float>(acc);
      }
    }
}

// Forward direction: s_f[t] = <F[t], C_f[t]> feeds y[t + 1], so ds_f[t] = dy[t + 1]; the adjoint
// λ[t] = ds_f[t] C_f[t] + exp(dt_f[t+1] A) λ[t+1] runs from the end. Backward direction: s_b[t] =
// <G[t], C_b[t]> feeds y[t - 1]; G[t - 1] depends on G[t], so its adjoint μ[t] = ds_b[t] C_b[t] +
// exp(dt_b[t-1] A) μ[t-1] runs from the start.
void RefBackend::bidirectional_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log,
                                             const Tensor& bc, int64_t b_offset, const Tensor& dd,
                                             const Tensor& d_skip, const Tensor& dy, int64_t /*chunk*/, Tensor& du,
                                             Tensor& ddt_raw, Tensor& dbc, Tensor& ddd, Tensor* da_log,
                                             Tensor* dd_skip) {
  const BiView v{u, dt_raw, a_log, bc, b_offset, u.dim(1), u.dim(2), a_log.dim(1), bc.dim(2)};
  const int64_t Bn = u.dim(0), L = v.L, D = v.D, N = v.N, W = v.W, H = dd.dim(2);
  std::vector<double> dbc_acc(static_cast<size_t>(bc.numel()), 0.0), ddd_acc(static_cast<size_t>(dd.numel()), 0.0);
  std::vector<double> dskip(static_cast<size_t>(H), 0.0), lam(static_cast<size_t>(N));
  auto g = [&](int64_t b, int64_t t, int64_t d) -> double {
    return t >= 0 && t < L ? dy.data()[(b * L + t) * D + d] : 0.0;
  };
  auto dbcp = [&](int64_t b, int64_t t, int k) { return dbc_acc.data() + (b * L + t) * W + b_offset + k * N; };
  BiStates s;
  for (int64_t d = 0; d < D; ++d) {
    const int64_t h = d / (D / H);
    std::vector<double> gA(static_cast<size_t>(N), 0.0);
    for (int64_t b = 0; b < Bn; ++b) {
      v.states(b, d, s);
      std::vector<double> gu(static_cast<size_t>(L), 0.0);
      for (int64_t t = 0; t < L; ++t) {
        const double x = v.x(b, t, d), gy = g(b, t, d);
        gu[static_cast<size_t>(t)] = gy * (static_cast<double>(dd.data()[(b * L + t) * H + h]) + d_skip.data()[h]);
        ddd_acc[static_cast<size_t>((b * L + t) * H + h)] += gy * x;
        dskip[static_cast<size_t>(h)] += gy * x;
      }
      // forward direction, from the end
      std::fill(lam.begin(), lam.end(), 0.0);
      for (int64_t t = L - 1; t >= 0; --t) {
        const double ds = g(b, t + 1, d), dt = s.dtf[static_cast<size_t>(t)], x = v.x(b, t, d);
        const double next_dt = t + 1 < L ? s.dtf[static_cast<size_t>(t + 1)] : 0.0;
        const float *Bf = v.bcp(b, t, 0), *Cf = v.bcp(b, t, 1);
        double* dBf = dbcp(b, t, 0);
        double gdt = 0;
        for (int64_t k = 0; k < N; ++k) {
          const auto kk = static_cast<size_t>(k);
          const double A = s.A[kk], f_t = s.fs[static_cast<size_t>((t + 1) * N + k)];
          const double f_prev = s.fs[static_cast<size_t>(t * N + k)];
          dBf[N + k] += ds * f_t;  // dC_f
          lam[kk] = ds * Cf[k] + std::exp(next_dt * A) * lam[kk];
          const double decay = std::exp(dt * A);
          gdt += lam[kk] * (f_prev * decay * A + Bf[k] * x);
          gA[kk] += lam[kk] * f_prev * decay * dt;
          dBf[k] += lam[kk] * dt * x;
          gu[static_cast<size_t>(t)] += lam[kk] * dt * Bf[k];
        }
        const double r = v.raw(b, t, 0, d);
        ddt_raw.data()[(b * L + t) * 2 * D + d] = static_cast<float>(gdt * (r > 20 ? 1.0 : sigmoid(r)));
      }
      // backward direction, from the start
      std::fill(lam.begin(), lam.end(), 0.0);
      for (int64_t t = 0; t < L; ++t) {
        const double ds = g(b, t - 1, d), dt = s.dtb[static_cast<size_t>(t)], x = v.x(b, t, d);
        const double prev_dt = t > 0 ? s.dtb[static_cast<size_t>(t - 1)] : 0.0;
        const float *Bb = v.bcp(b, t, 2), *Cb = v.bcp(b, t, 3);
        double* dBb = dbcp(b, t, 2);
        double gdt = 0;
        for (int64_t k = 0; k < N; ++k) {
          const auto kk = static_cast<size_t>(k);
          const double A = s.A[kk], g_t = s.gs[static_cast<size_t>(t * N + k)];
          const double g_next = s.gs[static_cast<size_t>((t + 1) * N + k)];
          dBb[N + k] += ds * g_t;  // dC_b
          lam[kk] = ds * Cb[k] + std::exp(prev_dt * A) * lam[kk];
          const double decay = std::exp(dt * A);
          gdt += lam[kk] * (g_next * decay * A + Bb[k] * x);
          gA[kk] += lam[kk] * g_next * decay * dt;
          dBb[k] += lam[kk] * dt * x;
          gu[static_cast<size_t>(t)] += lam[kk] * dt * Bb[k];
        }
        const double r = v.raw(b, t, 1, d);
        ddt_raw.data()[(b * L + t) * 2 * D + D + d] = static_cast<float>(gdt * (r > 20 ? 1.0 : sigmoid(r)));
      }
      for (int64_t t = 0; t < L; ++t) du.data()[(b * L + t) * D + d] = static_cast<float>(gu[static_cast<size_t>(t)]);
    }
    if (da_log)  // A = -exp(a_log): dA/da_log = A
      for (int64_t k = 0; k < N; ++k)
        da_log->data()[d * N + k] += static_cast<float>(gA[static_cast<size_t>(k)] * s.A[static_cast<size_t>(k)]);
  }
  for (int64_t i = 0; i < bc.numel(); ++i) dbc.data()[i] = static_cast<float>(dbc_acc[static_cast<size_t>(i)]);
  for (int64_t i = 0; i < dd.numel(); ++i) ddd.data()[i] = static_cast<float>(ddd_acc[static_cast<size_t>(i)]);
  if (dd_skip)
    for (int64_t k = 0; k < H; ++k) dd_skip->data()[k] += static_cast<float>(dskip[static_cast<size_t>(k)]);
}

// ---- PoNet

namespace {
struct PonetView {
  int64_t L, C, heads, hd, segment;
  int local;
  // channel c of projection k (0 Q, 1 K, 2 V, 3 O, 4 S, 5 Lo) of token t of sequence b
  int64_t at(int64_t b, int64_t t, int k, int64_t c) const { return (b * L + t) * 6 * C + k * C + c; }
  // the token attaining the maximum of projection k, channel c, over tokens [lo, hi)
  int64_t argmax(const float* P, int64_t b, int k, int64_t c, int64_t lo, int64_t hi) const {
    int64_t best = lo;
    for (int64_t t = lo + 1; t < hi; ++t)
      if (P[at(b, t, k, c)] > P[at(b, best, k, c)]) best = t;
    return best;
  }
  int64_t seg_lo(int64_t t) const { return t / segment * segment; }
  int64_t seg_hi(int64_t t) const { return std::min(L, seg_lo(t) + segment); }
  int64_t win_lo(int64_t t) const { return std::max<int64_t>(0, t - local / 2); }
  int64_t win_hi(int64_t t) const { return std::min(L, t + local / 2 + 1); }
  // the global aggregation of sequence b: g (mean query), a (softmax weights [heads, L]), g2 (pooled value)
  void global(const float* P, int64_t b, std::vector<double>& g, std::vector<double>& a, std::vector<double>& g2) const {
    g.assign(static_cast<size_t>(C), 0.0);
    g2.assign(static_cast<size_t>(C), 0.0);
    a.assign(static_cast<size_t>(heads * L), 0.0);
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < C; ++c) g[static_cast<size_t>(c)] += P[at(b, t, 0, c)] / static_cast<double>(L);
    const double scale = 1 / std::sqrt(static_cast<double>(hd));
    for (int64_t h = 0; h < heads; ++h) {
      double* ah = a.data() + h * L;
      double mx = -std::numeric_limits<double>::infinity(), sum = 0;
      for (int64_t t = 0; t < L; ++t) {
        double dot = 0;
        for (int64_t c = h * hd; c < (h + 1) * hd; ++c) dot += g[static_cast<size_t>(c)] * P[at(b, t, 1, c)];
        ah[t] = dot * scale;
        mx = std::max(mx, ah[t]);
      }
      for (int64_t t = 0; t < L; ++t) sum += (ah[t] = std::exp(ah[t] - mx));
      for (int64_t t = 0; t < L; ++t) ah[t] /= sum;
      for (int64_t t = 0; t < L; ++t)
        for (int64_t c = h * hd; c < (h + 1) * hd; ++c) g2[static_cast<size_t>(c)] += ah[t] * P[at(b, t, 2, c)];
    }
  }
};
}  // namespace

void RefBackend::ponet_pool(const Tensor& p, int heads, int64_t segment, int local_kernel, Tensor& y) {
  const int64_t C = p.dim(2) / 6;
  const PonetView v{p.dim(1), C, heads, C / heads, segment, local_kernel};
  const float* P = p.data();
  std::vector<double> g, a, g2;
  for (int64_t b = 0; b < p.dim(0); ++b) {
    v.global(P, b, g, a, g2);
    for (int64_t t = 0; t < v.L; ++t)
      for (int64_t c = 0; c < C; ++c) {
        const double s = P[v.at(b, v.argmax(P, b, 4, c, v.seg_lo(t), v.seg_hi(t)), 4, c)];
        const double l = P[v.at(b, v.argmax(P, b, 5, c, v.win_lo(t), v.win_hi(t)), 5, c)];
        y.data()[(b * v.L + t) * C + c] = static_cast<float>(P[v.at(b, t, 3, c)] * (g2[static_cast<size_t>(c)] + s) + l);
      }
  }
}

void RefBackend::ponet_pool_backward(const Tensor& p, int heads, int64_t segment, int local_kernel, const Tensor& dy,
                                     Tensor& dp) {
  const int64_t C = p.dim(2) / 6, L = p.dim(1), hd = C / heads;
  const PonetView v{L, C, heads, hd, segment, local_kernel};
  const float* P = p.data();
  std::vector<double> acc(static_cast<size_t>(p.numel()), 0.0), g, a, g2;
  const double scale = 1 / std::sqrt(static_cast<double>(hd));
  for (int64_t b = 0; b < p.dim(0); ++b) {
    v.global(P, b, g, a, g2);
    std::vector<double> dg2(static_cast<size_t>(C), 0.0);
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < C; ++c) {
        const double gy = dy.data()[(b * L + t) * C + c], o = P[v.at(b, t, 3, c)];
        const int64_t ts = v.argmax(P, b, 4, c, v.seg_lo(t), v.seg_hi(t));
        const int64_t tl = v.argmax(P, b, 5, c, v.win_lo(t), v.win_hi(t));
        acc[static_cast<size_t>(v.at(b, t, 3, c))] += gy * (g2[static_cast<size_t>(c)] + P[v.at(b, ts, 4, c)]);
        acc[static_cast<size_t>(v.at(b, ts, 4, c))] += gy * o;
        acc[static_cast<size_t>(v.at(b, tl, 5, c))] += gy;
        dg2[static_cast<size_t>(c)] += gy * o;
      }
    // g2 = Σ_t a[t] V[t] with a = softmax(scale <g, K[t]>) and g = mean_t Q[t]
    std::vector<double> dg(static_cast<size_t>(C), 0.0);
    for (int64_t h = 0; h < heads; ++h) {
      const double* ah = a.data() + h * L;
      std::vector<double> da(static_cast<size_t>(L), 0.0);
      double dot = 0;
      for (int64_t t = 0; t < L; ++t) {
        for (int64_t c = h * hd; c < (h + 1) * hd; ++c) {
          acc[static_cast<size_t>(v.at(b, t, 2, c))] += ah[t] * dg2[static_cast<size_t>(c)];
          da[static_cast<size_t>(t)] += dg2[static_cast<size_t>(c)] * P[v.at(b, t, 2, c)];
        }
        dot += ah[t] * da[static_cast<size_t>(t)];
      }
      for (int64_t t = 0; t < L; ++t) {
        const double dscore = ah[t] * (da[static_cast<size_t>(t)] - dot) * scale;
        for (int64_t c = h * hd; c < (h + 1) * hd; ++c) {
          acc[static_cast<size_t>(v.at(b, t, 1, c))] += dscore * g[static_cast<size_t>(c)];
          dg[static_cast<size_t>(c)] += dscore * P[v.at(b, t, 1, c)];
        }
      }
    }
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < C; ++c)
        acc[static_cast<size_t>(v.at(b, t, 0, c))] += dg[static_cast<size_t>(c)] / static_cast<double>(L);
  }
  for (int64_t i = 0; i < p.numel(); ++i) dp.data()[i] = static_cast<float>(acc[static_cast<size_t>(i)]);
}

}  // namespace mf
