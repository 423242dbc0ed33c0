// Strip-MLP's ops as plain loops with double accumulation: the strip projection (strip_mix), the
// softmax reweighting of branches (split_attention) and ConvNeXt-V2's GRN (grn); see Backend.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/ref/ref_backend.h"

namespace mf {

namespace {
// strip_mix's geometry: the mixed axis (length L, index m) and the tap axis (length P, index p).
struct StripGeometry {
  int64_t B, H, W, C, L, P, G;
  int axis;
  StripGeometry(const Tensor& x, const Tensor& w, int a)
      : B(x.dim(0)), H(x.dim(1)), W(x.dim(2)), C(x.dim(3)), L(x.dim(a)), P(a == 2 ? x.dim(1) : x.dim(2)),
        G(w.dim(0) / x.dim(a)), axis(a) {}
  // Offset of position (p, m) of sample b, channel 0.
  int64_t at(int64_t b, int64_t p, int64_t m) const {
    return (axis == 2 ? (b * H + p) * W + m : (b * H + m) * W + p) * C;
  }
  // w[g·L + o, m, 0, t]
  int64_t weight(int64_t g, int64_t o, int64_t m, int t) const { return ((g * L + o) * L + m) * 3 + t; }
};
}  // namespace

void RefBackend::strip_mix(const Tensor& x, const Tensor& w, const Tensor* b, int axis, Tensor& y) {
  const StripGeometry s(x, w, axis);
  for (int64_t n = 0; n < s.B; ++n)
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t o = 0; o < s.L; ++o)
        for (int64_t c = 0; c < s.C; ++c) {
          const int64_t g = c % s.G;
          double acc = b ? b->data()[g * s.L + o] : 0.0;
          for (int t = 0; t < 3; ++t) {
            const int64_t q = p + t - 1;
            if (q < 0 || q >= s.P) continue;
            for (int64_t m = 0; m < s.L; ++m)
              acc += static_cast<double>(w.data()[s.weight(g, o, m, t)]) * x.data()[s.at(n, q, m) + c];
          }
          y.data()[s.at(n, p, o) + c] = static_cast<float>(acc);
        }
}

void RefBackend::strip_mix_backward(const Tensor& x, const Tensor& w, int axis, const Tensor& dy, Tensor* dx,
                                    Tensor* dw, Tensor* db) {
  const StripGeometry s(x, w, axis);
  if (dx)  // dx[q, m] = Σ_{o, t} w[g, o, m, t] · dy[q − t + 1, o]
    for (int64_t n = 0; n < s.B; ++n)
      for (int64_t q = 0; q < s.P; ++q)
        for (int64_t m = 0; m < s.L; ++m)
          for (int64_t c = 0; c < s.C; ++c) {
            const int64_t g = c % s.G;
            double acc = 0;
            for (int t = 0; t < 3; ++t) {
              const int64_t p = q - t + 1;
              if (p < 0 || p >= s.P) continue;
              for (int64_t o = 0; o < s.L; ++o)
                acc += static_cast<double>(w.data()[s.weight(g, o, m, t)]) * dy.data()[s.at(n, p, o) + c];
            }
            dx->data()[s.at(n, q, m) + c] = static_cast<float>(acc);
          }
  if (dw)
    for (int64_t g = 0; g < s.G; ++g)
      for (int64_t o = 0; o < s.L; ++o)
        for (int64_t m = 0; m < s.L; ++m)
          for (int t = 0; t < 3; ++t) {
            double acc = 0;
            for (int64_t n = 0; n < s.B; ++n)
              for (int64_t p = 0; p < s.P; ++p) {
                const int64_t q = p + t - 1;
                if (q < 0 || q >= s.P) continue;
                for (int64_t c = g; c < s.C; c += s.G)
                  acc += static_cast<double>(dy.data()[s.at(n, p, o) + c]) * x.data()[s.at(n, q, m) + c];
              }
            dw->data()[s.weight(g, o, m, t)] += static_cast<float>(acc);
          }
  if (db)
    for (int64_t g = 0; g < s.G; ++g)
      for (int64_t o = 0; o < s.L; ++o) {
        double acc = 0;
        for (int64_t n = 0; n < s.B; ++n)
          for (int64_t p = 0; p < s.P; ++p)
            for (int64_t c = g; c < s.C; c += s.G) acc += dy.data()[s.at(n, p, o) + c];
        db->data()[g * s.L + o] += static_cast<float>(acc);
      }
}

namespace {
// softmax over the K logits of sample n, channel c, into a.
void branch_weights(const Tensor& logits, int64_t n, int64_t c, int64_t K, double* a) {
  const float* l = logits.data() + (n * logits.dim(1) / K + c) * K;
  double mx = l[0], sum = 0;
  for (int64_t k = 1; k < K; ++k) mx = std::max(mx, static_cast<double>(l[k]));
  for (int64_t k = 0; k < K; ++k) sum += a[k] = std::exp(l[k] - mx);
  for (int64_t k = 0; k < K; ++k) a[k] /= sum;
}
}  // namespace

void RefBackend::split_attention(const std::vector<Tensor>& branches, const Tensor& logits, Tensor& y) {
  const auto K = static_cast<int64_t>(branches.size());
  const int64_t B = y.dim(0), C = y.shape().last(), per = y.numel() / (B * C);
  double a[16];
  for (int64_t n = 0; n < B; ++n)
    for (int64_t c = 0; c < C; ++c) {
      branch_weights(logits, n, c, K, a);
      for (int64_t i = 0; i < per; ++i) {
        const int64_t at = (n * per + i) * C + c;
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += a[k] * branches[static_cast<size_t>(k)].data()[at];
        y.data()[at] = static_cast<float>(acc);
      }
    }
}

void RefBackend::split_attention_backward(const std::vector<Tensor>& branches, const Tensor& logits, const Tensor& dy,
                                          std::vector<Tensor>& dbranches, Tensor& dlogits) {
  const auto K = static_cast<int64_t>(branches.size());
  const int64_t B = dy.dim(0), C = dy.shape().last(), per = dy.numel() / (B * C);
  double a[16], da[16];
  for (int64_t n = 0; n < B; ++n)
    for (int64_t c = 0; c < C; ++c) {
      branch_weights(logits, n, c, K, a);
      for (int64_t k = 0; k < K; ++k) da[k] = 0;
      for (int64_t i = 0; i < per; ++i) {
        const int64_t at = (n * per + i) * C + c;
        const double g = dy.data()[at];
        for (int64_t k = 0; k < K; ++k) {
          da[k] += g * branches[static_cast<size_t>(k)].data()[at];
          dbranches[static_cast<size_t>(k)].data()[at] = static_cast<float>(a[k] * g);
        }
      }
      // softmax's Jacobian: dl_k = a_k (da_k − Σ_j a_j da_j)
      double dot = 0;
      for (int64_t k = 0; k < K; ++k) dot += a[k] * da[k];
      for (int64_t k = 0; k < K; ++k) dlogits.data()[(n * C + c) * K + k] = static_cast<float>(a[k] * (da[k] - dot));
    }
}

void RefBackend::grn(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y) {
  const int64_t B = x.dim(0), N = x.dim(1) * x.dim(2), C = x.dim(3);
  std::vector<double> g(static_cast<size_t>(C));
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x.data() + b * N * C;
    double mean = 0;
    for (int64_t c = 0; c < C; ++c) {
      double s = 0;
      for (int64_t i = 0; i < N; ++i) s += static_cast<double>(xb[i * C + c]) * xb[i * C + c];
      g[static_cast<size_t>(c)] = std::sqrt(s);
      mean += g[static_cast<size_t>(c)] / static_cast<double>(C);
    }
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c) {
        const double v = xb[i * C + c], nx = g[static_cast<size_t>(c)] / (mean + 1e-6);
        y.data()[(b * N + i) * C + c] = static_cast<float>(gamma.data()[c] * v * nx + beta.data()[c] + v);
      }
  }
}

void RefBackend::grn_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy, Tensor& dx, Tensor* dgamma,
                              Tensor* dbeta) {
  // y = x (1 + γ n) + β, n_c = g_c / (m + ε), m = mean_c g_c, g_c = ‖x_c‖.
  // With s_c = γ_c Σ_i dy_ic x_ic (= dL/dn_c): dL/dg_j = s_j / (m + ε) − Σ_c s_c g_c / (C (m + ε)²), and
  // dg_j/dx_ij = x_ij / g_j (0 where g_j = 0, as torch's norm backward).
  const int64_t B = x.dim(0), N = x.dim(1) * x.dim(2), C = x.dim(3);
  std::vector<double> g(static_cast<size_t>(C)), s(static_cast<size_t>(C)), dg(static_cast<size_t>(C));
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x.data() + b * N * C;
    const float* dyb = dy.data() + b * N * C;
    double mean = 0;
    for (int64_t c = 0; c < C; ++c) {
      double sq = 0, xd = 0, d = 0;
      for (int64_t i = 0; i < N; ++i) {
        sq += static_cast<double>(xb[i * C + c]) * xb[i * C + c];
        xd += static_cast<double>(xb[i * C + c]) * dyb[i * C + c];
        d += dyb[i * C + c];
      }
      const auto cc = static_cast<size_t>(c);
      g[cc] = std::sqrt(sq);
      s[cc] = gamma.data()[c] * xd;
      mean += g[cc] / static_cast<double>(C);
      if (dbeta) dbeta->data()[c] += static_cast<float>(d);
      if (dgamma) dg[cc] = xd;  // times n_c below, once the mean is known
    }
    const double inv = 1.0 / (mean + 1e-6);
    double sg = 0;
    for (int64_t c = 0; c < C; ++c) sg += s[static_cast<size_t>(c)] * g[static_cast<size_t>(c)];
    for (int64_t c = 0; c < C; ++c) {
      const auto cc = static_cast<size_t>(c);
      if (dgamma) dgamma->data()[c] += static_cast<float>(dg[cc] * g[cc] * inv);
      const double dgj = s[cc] * inv - sg * inv * inv / static_cast<double>(C);
      const double through_norm = g[cc] > 0 ? dgj / g[cc] : 0.0;
      const double direct = 1.0 + gamma.data()[c] * g[cc] * inv;
      for (int64_t i = 0; i < N; ++i)
        dx.data()[(b * N + i) * C + c] =
            static_cast<float>(dyb[i * C + c] * direct + through_norm * xb[i * C + c]);
    }
  }
}

}  // namespace mf
