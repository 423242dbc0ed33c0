// Strip-MLP's ops on the CPU. strip_mix expands the grouped weight once per call to one C-wide row per
// (output o, tap t, input m), so that every inner loop is a contiguous multiply-add over the channels
// (vectorised), and runs parallel over output rows; its backward the same way (dx parallel over input
// rows, the weight gradient parallel over outputs). grn computes each sample's channel norms in one
// pass over the rows, then writes y in a second. CAS-ViT's gate is here too (one row of channels at a
// time).
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_backend.h"

namespace mf {

namespace {
struct Strip {
  int64_t B, H, W, C, L, P, G;
  int axis;
  Strip(const Tensor& x, const Tensor& w, int a)
      : B(x.dim(0)), H(x.dim(1)), W(x.dim(2)), C(x.dim(3)), L(x.dim(a)), P(a == 2 ? x.dim(1) : x.dim(2)),
        G(w.dim(0) / x.dim(a)), axis(a) {}
  int64_t at(int64_t b, int64_t p, int64_t m) const {
    return (axis == 2 ? (b * H + p) * W + m : (b * H + m) * W + p) * C;
  }
  // The weight as rows [o][t][m][c] = w[(c mod G)·L + o, m, 0, t].
  std::vector<float> expand(const Tensor& w) const {
    std::vector<float> e(static_cast<size_t>(L * 3 * L * C));
    for (int64_t o = 0; o < L; ++o)
      for (int t = 0; t < 3; ++t)
        for (int64_t m = 0; m < L; ++m) {
          float* row = e.data() + ((o * 3 + t) * L + m) * C;
          for (int64_t c = 0; c < C; ++c) row[c] = w.data()[(((c % G) * L + o) * L + m) * 3 + t];
        }
    return e;
  }
};
}  // namespace

void CpuBackend::strip_mix(const Tensor& x, const Tensor& w, const Tensor* b, int axis, Tensor& y) {
  const Strip s(x, w, axis);
  const std::vector<float> we = s.expand(w);
  std::vector<float> bias(static_cast<size_t>(s.L * s.C), 0.f);
  if (b)
    for (int64_t o = 0; o < s.L; ++o)
      for (int64_t c = 0; c < s.C; ++c) bias[static_cast<size_t>(o * s.C + c)] = b->data()[(c % s.G) * s.L + o];
  const float* xd = x.data();
  float* yd = y.data();
  const int64_t C = s.C;
#pragma omp parallel for schedule(static)
  for (int64_t np = 0; np < s.B * s.P; ++np) {
    const int64_t n = np / s.P, p = np % s.P;
    for (int64_t o = 0; o < s.L; ++o) {
      float* acc = yd + s.at(n, p, o);
      const float* bo = bias.data() + o * C;
      for (int64_t c = 0; c < C; ++c) acc[c] = bo[c];
      for (int t = 0; t < 3; ++t) {
        const int64_t q = p + t - 1;
        if (q < 0 || q >= s.P) continue;
        for (int64_t m = 0; m < s.L; ++m) {
          const float* wr = we.data() + ((o * 3 + t) * s.L + m) * C;
          const float* xr = xd + s.at(n, q, m);
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) acc[c] += wr[c] * xr[c];
        }
      }
    }
  }
}

void CpuBackend::strip_mix_backward(const Tensor& x, const Tensor& w, int axis, const Tensor& dy, Tensor* dx,
                                    Tensor* dw, Tensor* db) {
  const Strip s(x, w, axis);
  const int64_t C = s.C, L = s.L;
  const float* xd = x.data();
  const float* dyd = dy.data();
  if (dx) {
    const std::vector<float> we = s.expand(w);
    float* dxd = dx->data();
#pragma omp parallel for schedule(static)
    for (int64_t nq = 0; nq < s.B * s.P; ++nq) {
      const int64_t n = nq / s.P, q = nq % s.P;
      for (int64_t m = 0; m < L; ++m) {
        float* acc = dxd + s.at(n, q, m);
        for (int64_t c = 0; c < C; ++c) acc[c] = 0.f;
        for (int t = 0; t < 3; ++t) {
          const int64_t p = q - t + 1;
          if (p < 0 || p >= s.P) continue;
          for (int64_t o = 0; o < L; ++o) {
            const float* wr = we.data() + ((o * 3 + t) * L + m) * C;
            const float* gr = dyd + s.at(n, p, o);
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) acc[c] += wr[c] * gr[c];
          }
        }
      }
    }
  }
  if (!dw && !db) return;
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < L; ++o) {
    std::vector<float> acc(static_cast<size_t>(3 * L * C), 0.f), bacc(static_cast<size_t>(C), 0.f);
    for (int64_t n = 0; n < s.B; ++n)
      for (int64_t p = 0; p < s.P; ++p) {
        const float* gr = dyd + s.at(n, p, o);
        if (db)
          for (int64_t c = 0; c < C; ++c) bacc[static_cast<size_t>(c)] += gr[c];
        if (!dw) continue;
        for (int t = 0; t < 3; ++t) {
          const int64_t q = p + t - 1;
          if (q < 0 || q >= s.P) continue;
          for (int64_t m = 0; m < L; ++m) {
            float* a = acc.data() + (t * L + m) * C;
            const float* xr = xd + s.at(n, q, m);
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) a[c] += gr[c] * xr[c];
          }
        }
      }
    // Each output o owns the weight rows g·L + o: no two threads write the same gradient.
    for (int64_t g = 0; g < s.G; ++g) {
      if (dw)
        for (int t = 0; t < 3; ++t)
          for (int64_t m = 0; m < L; ++m) {
            double sum = 0;
            for (int64_t c = g; c < C; c += s.G) sum += acc[static_cast<size_t>((t * L + m) * C + c)];
            dw->data()[((g * L + o) * L + m) * 3 + t] += static_cast<float>(sum);
          }
      if (db) {
        double sum = 0;
        for (int64_t c = g; c < C; c += s.G) sum += bacc[static_cast<size_t>(c)];
        db->data()[g * L + o] += static_cast<float>(sum);
      }
    }
  }
}

void CpuBackend::grn(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y) {
  const int64_t B = x.dim(0), N = x.dim(1) * x.dim(2), C = x.dim(3);
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x.data() + b * N * C;
    float* yb = y.data() + b * N * C;
    std::vector<double> sq(static_cast<size_t>(C), 0.0);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c) sq[static_cast<size_t>(c)] += static_cast<double>(xb[i * C + c]) * xb[i * C + c];
    double mean = 0;
    for (auto& v : sq) mean += (v = std::sqrt(v)) / static_cast<double>(C);
    std::vector<float> scale(static_cast<size_t>(C));  // 1 + γ n
    for (int64_t c = 0; c < C; ++c)
      scale[static_cast<size_t>(c)] = static_cast<float>(1.0 + gamma.data()[c] * sq[static_cast<size_t>(c)] / (mean + 1e-6));
    const float* be = beta.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c) yb[i * C + c] = xb[i * C + c] * scale[static_cast<size_t>(c)] + be[c];
  }
}

// CAS-ViT's gate: the gate value of each position (or sample and channel) computed once per row of
// channels, then one multiply per element; parallel over positions.
void CpuBackend::gate(const Tensor& x, const Tensor& g, bool sigmoid, Tensor& y) {
  const int64_t C = x.shape().last(), rows = x.numel() / C, per_sample = rows / x.dim(0);
  const bool full = g.shape() == x.shape(), position = !full && g.ndim() == x.ndim();
  const float* xd = x.data();
  const float* gd = g.data();
  float* yd = y.data();
  auto f = [sigmoid](float v) { return sigmoid ? 1.f / (1.f + std::exp(-v)) : v; };
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xd + r * C;
    float* yr = yd + r * C;
    if (position) {
      const float s = f(gd[r]);
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * s;
    } else {
      const float* gr = full ? gd + r * C : gd + (r / per_sample) * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * f(gr[c]);
    }
  }
}

}  // namespace mf
