// Reference sequence ops (docs/sequences.md): embedding, position tables, causal attention, Mamba's
// causal depthwise conv1d and its selective scan. Plain loops in double; the selective scan's
// backward keeps every state of one (sequence, channel) at a time, the simplest correct way (the
// cpu backend's kernel recomputes them from checkpoints instead).
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/ref/ref_backend.h"

namespace mf {

namespace {
// PyTorch's softplus (beta 1, threshold 20): the identity above 20.
double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }
double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double silu(double x) { return x * sigmoid(x); }
double silu_grad(double x) {
  const double s = sigmoid(x);
  return s * (1 + x * (1 - s));
}
}  // namespace

void RefBackend::embedding(const Tensor& ids, const Tensor& table, Tensor& y) {
  const int64_t D = table.dim(1);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    const auto row = static_cast<int64_t>(ids.data()[i]);  // checked by the dispatcher
    std::copy_n(table.data() + row * D, D, y.data() + i * D);
  }
}

void RefBackend::embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) {
  const int64_t D = dtable.dim(1);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    const auto row = static_cast<int64_t>(ids.data()[i]);
    for (int64_t c = 0; c < D; ++c) dtable.data()[row * D + c] += dy.data()[i * D + c];
  }
}

// Mamba's (and T5's) RMSNorm: y = w · x / sqrt(mean(x²) + eps) per row. With r = rsqrt(mean(x²) + eps)
// and x̂ = x r: dx = r (g - x̂ · mean(g ⊙ x̂)), g = dy ⊙ w; dw += Σ_rows dy ⊙ x̂.
void RefBackend::rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  const int64_t C = x.shape().last(), rows = x.numel() / C;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * C;
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const double inv = 1 / std::sqrt(ss / static_cast<double>(C) + eps);
    for (int64_t c = 0; c < C; ++c) y.data()[r * C + c] = static_cast<float>(xr[c] * inv * w.data()[c]);
  }
}

void RefBackend::rms_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                   Tensor* dw) {
  const int64_t C = x.shape().last(), rows = x.numel() / C;
  std::vector<double> gw(static_cast<size_t>(C), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * C;
    const float* g = dy.data() + r * C;
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const double inv = 1 / std::sqrt(ss / static_cast<double>(C) + eps);
    double dot = 0;
    for (int64_t c = 0; c < C; ++c) {
      dot += static_cast<double>(g[c]) * w.data()[c] * xr[c] * inv;
      gw[static_cast<size_t>(c)] += static_cast<double>(g[c]) * xr[c] * inv;
    }
    dot /= static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c)
      dx.data()[r * C + c] = static_cast<float>(inv * (static_cast<double>(g[c]) * w.data()[c] - xr[c] * inv * dot));
  }
  if (dw)
    for (int64_t c = 0; c < C; ++c) dw->data()[c] += static_cast<float>(gw[static_cast<size_t>(c)]);
}

void RefBackend::add_positions(const Tensor& x, const Tensor& pos, Tensor& y) {
  const int64_t B = x.dim(0), N = x.dim(1), D = x.dim(2);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N * D; ++i) y.data()[b * N * D + i] = x.data()[b * N * D + i] + pos.data()[i];
}

void RefBackend::add_positions_backward(const Tensor& dy, Tensor& dpos) {
  const int64_t B = dy.dim(0), N = dy.dim(1), D = dy.dim(2);
  for (int64_t i = 0; i < N * D; ++i) {
    double acc = 0;
    for (int64_t b = 0; b < B; ++b) acc += dy.data()[b * N * D + i];
    dpos.data()[i] += static_cast<float>(acc);
  }
}

// As RefBackend::attention, with the logits of keys j > i left out of query i's softmax.
void RefBackend::causal_attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) {
  const int64_t B = qkv.dim(0), N = qkv.dim(1), A = static_cast<int64_t>(heads) * head_dim;
  const float* QKV = qkv.data();
  std::vector<double> p(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < N; ++i) {
        const float* q = QKV + (b * N + i) * 3 * A + h * head_dim;
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          const float* k = QKV + (b * N + j) * 3 * A + A + h * head_dim;
          double s = 0;
          for (int64_t d = 0; d < head_dim; ++d) s += static_cast<double>(q[d]) * k[d];
          p[static_cast<size_t>(j)] = s * scale;
          mx = std::max(mx, s * scale);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += (p[static_cast<size_t>(j)] = std::exp(p[static_cast<size_t>(j)] - mx));
        for (int64_t d = 0; d < head_dim; ++d) {
          double acc = 0;
          for (int64_t j = 0; j <= i; ++j) acc += p[static_cast<size_t>(j)] * QKV[(b * N + j) * 3 * A + 2 * A + h * head_dim + d];
          y.data()[(b * N + i) * A + h * head_dim + d] = static_cast<float>(acc / sum);
        }
      }
}

// The masked softmax's probabilities are zero above the diagonal, so attention's backward
// (dS = P ⊙ (dP - rowsum(P ⊙ dP))) restricted to j <= i is the whole of it.
void RefBackend::causal_attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                           Tensor& dqkv) {
  const int64_t B = qkv.dim(0), N = qkv.dim(1), A = static_cast<int64_t>(heads) * head_dim, d = head_dim;
  const float* QKV = qkv.data();
  const float* G = dy.data();
  auto at = [&](int64_t b, int64_t i, int part, int64_t h, int64_t c) { return (b * N + i) * 3 * A + part * A + h * d + c; };
  std::vector<double> P(static_cast<size_t>(N * N)), dS(static_cast<size_t>(N * N));
  auto ix = [N](int64_t i, int64_t j) { return static_cast<size_t>(i * N + j); };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      std::fill(P.begin(), P.end(), 0.0);
      std::fill(dS.begin(), dS.end(), 0.0);
      for (int64_t i = 0; i < N; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          double s = 0;
          for (int64_t c = 0; c < d; ++c) s += static_cast<double>(QKV[at(b, i, 0, h, c)]) * QKV[at(b, j, 1, h, c)];
          P[ix(i, j)] = s * scale;
          mx = std::max(mx, s * scale);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += (P[ix(i, j)] = std::exp(P[ix(i, j)] - mx));
        for (int64_t j = 0; j <= i; ++j) P[ix(i, j)] /= sum;
        double row = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double s = 0;
          for (int64_t c = 0; c < d; ++c) s += static_cast<double>(G[(b * N + i) * A + h * d + c]) * QKV[at(b, j, 2, h, c)];
          dS[ix(i, j)] = s;
          row += s * P[ix(i, j)];
        }
        for (int64_t j = 0; j <= i; ++j) dS[ix(i, j)] = P[ix(i, j)] * (dS[ix(i, j)] - row);
      }
      for (int64_t i = 0; i < N; ++i)
        for (int64_t c = 0; c < d; ++c) {
          double dq = 0, dk = 0, dv = 0;
          for (int64_t j = 0; j < N; ++j) {
            dq += dS[ix(i, j)] * QKV[at(b, j, 1, h, c)];
            dk += dS[ix(j, i)] * QKV[at(b, j, 0, h, c)];
            dv += P[ix(j, i)] * G[(b * N + j) * A + h * d + c];
          }
          dqkv.data()[at(b, i, 0, h, c)] = static_cast<float>(dq * scale);
          dqkv.data()[at(b, i, 1, h, c)] = static_cast<float>(dk * scale);
          dqkv.data()[at(b, i, 2, h, c)] = static_cast<float>(dv);
        }
    }
}

void RefBackend::causal_conv1d(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  const int64_t B = x.dim(0), L = x.dim(1), C = x.dim(2), K = w.dim(2);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double acc = b ? b->data()[c] : 0.0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t s = t - (K - 1) + k;
          if (s >= 0) acc += static_cast<double>(w.data()[c * K + k]) * x.data()[(n * L + s) * C + c];
        }
        y.data()[(n * L + t) * C + c] = static_cast<float>(acc);
      }
}

void RefBackend::causal_conv1d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                                        Tensor* db) {
  const int64_t B = x.dim(0), L = x.dim(1), C = x.dim(2), K = w.dim(2);
  for (int64_t c = 0; c < C; ++c) {
    std::vector<double> gw(static_cast<size_t>(K), 0.0);
    double gb = 0;
    for (int64_t n = 0; n < B; ++n)
      for (int64_t s = 0; s < L; ++s) {
        // x[s] feeds y[t] for t = s + K - 1 - k, k = 0..K-1
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t t = s + K - 1 - k;
          if (t < L) acc += static_cast<double>(w.data()[c * K + k]) * dy.data()[(n * L + t) * C + c];
        }
        if (dx) dx->data()[(n * L + s) * C + c] = static_cast<float>(acc);
        const double g = dy.data()[(n * L + s) * C + c];
        gb += g;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t src = s - (K - 1) + k;
          if (src >= 0) gw[static_cast<size_t>(k)] += g * x.data()[(n * L + src) * C + c];
        }
      }
    if (dw)
      for (int64_t k = 0; k < K; ++k) dw->data()[c * K + k] += static_cast<float>(gw[static_cast<size_t>(k)]);
    if (db) db->data()[c] += static_cast<float>(gb);
  }
}

void RefBackend::selective_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                int64_t b_offset, const Tensor& d_skip, const Tensor& z, Tensor& y) {
  const int64_t B = u.dim(0), L = u.dim(1), D = u.dim(2), N = a_log.dim(1), W = bc.dim(2);
  std::vector<double> h(static_cast<size_t>(N));
  for (int64_t n = 0; n < B; ++n)
    for (int64_t d = 0; d < D; ++d) {
      std::fill(h.begin(), h.end(), 0.0);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = (n * L + t) * D + d;
        const double dt = softplus(dt_raw.data()[i]), x = u.data()[i];
        const float* Bt = bc.data() + (n * L + t) * W + b_offset;
        const float* Ct = Bt + N;
        double s = 0;
        for (int64_t k = 0; k < N; ++k) {
          const double A = -std::exp(static_cast<double>(a_log.data()[d * N + k]));
          h[static_cast<size_t>(k)] = std::exp(dt * A) * h[static_cast<size_t>(k)] + dt * Bt[k] * x;
          s += h[static_cast<size_t>(k)] * Ct[k];
        }
        y.data()[i] = static_cast<float>((s + d_skip.data()[d] * x) * silu(z.data()[i]));
      }
    }
}

// Per (sequence, channel): the forward recurrence with every state kept, then the adjoint recurrence
// backwards, λ[t] = dpre[t] C[t] + exp(dt[t+1] A) ⊙ λ[t+1] (docs/sequences.md has the derivation).
// B and C are shared by all channels: their gradients sum over d.
void RefBackend::selective_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                         int64_t b_offset, const Tensor& d_skip, const Tensor& z, const Tensor& dy,
                                         int64_t /*chunk*/, Tensor& du, Tensor& ddt_raw, Tensor& dbc, Tensor& dz,
                                         Tensor* da_log, Tensor* dd_skip) {
  const int64_t B = u.dim(0), L = u.dim(1), D = u.dim(2), N = a_log.dim(1), W = bc.dim(2);
  std::vector<double> dbc_acc(static_cast<size_t>(bc.numel()), 0.0);
  std::vector<double> hs(static_cast<size_t>((L + 1) * N)), lam(static_cast<size_t>(N)), A(static_cast<size_t>(N));
  for (int64_t d = 0; d < D; ++d) {
    for (int64_t k = 0; k < N; ++k) A[static_cast<size_t>(k)] = -std::exp(static_cast<double>(a_log.data()[d * N + k]));
    std::vector<double> gA(static_cast<size_t>(N), 0.0);
    double gD = 0;
    for (int64_t n = 0; n < B; ++n) {
      // hs[(t + 1) N + k] = h[t, k]; hs[0..N) = h[-1] = 0
      std::fill(hs.begin(), hs.begin() + N, 0.0);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = (n * L + t) * D + d;
        const double dt = softplus(dt_raw.data()[i]);
        const float* Bt = bc.data() + (n * L + t) * W + b_offset;
        for (int64_t k = 0; k < N; ++k)
          hs[static_cast<size_t>((t + 1) * N + k)] =
              std::exp(dt * A[static_cast<size_t>(k)]) * hs[static_cast<size_t>(t * N + k)] + dt * Bt[k] * u.data()[i];
      }
      std::fill(lam.begin(), lam.end(), 0.0);
      double next_dt = 0;  // dt[t + 1]; λ's carry is zero past the end
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t i = (n * L + t) * D + d;
        const int64_t row = (n * L + t) * W + b_offset;
        const double r = dt_raw.data()[i], dt = softplus(r), x = u.data()[i], zz = z.data()[i];
        const float* Bt = bc.data() + row;
        const float* Ct = Bt + N;
        double s = 0;
        for (int64_t k = 0; k < N; ++k) s += hs[static_cast<size_t>((t + 1) * N + k)] * Ct[k];
        const double pre = s + d_skip.data()[d] * x;
        const double g = dy.data()[i];
        dz.data()[i] = static_cast<float>(g * pre * silu_grad(zz));
        const double dpre = g * silu(zz);
        gD += dpre * x;
        double gx = dpre * d_skip.data()[d], gdt = 0;
        for (int64_t k = 0; k < N; ++k) {
          const auto kk = static_cast<size_t>(k);
          const double h_t = hs[static_cast<size_t>((t + 1) * N + k)], h_prev = hs[static_cast<size_t>(t * N + k)];
          dbc_acc[static_cast<size_t>(row + N + k)] += dpre * h_t;                   // dC
          lam[kk] = dpre * Ct[k] + std::exp(next_dt * A[kk]) * lam[kk];
          const double decay = std::exp(dt * A[kk]);
          const double g_decay = lam[kk] * h_prev;                                   // d(exp(dt A))
          gdt += g_decay * decay * A[kk] + lam[kk] * Bt[k] * x;
          gA[kk] += g_decay * decay * dt;
          dbc_acc[static_cast<size_t>(row + k)] += lam[kk] * dt * x;                 // dB
          gx += lam[kk] * dt * Bt[k];
        }
        du.data()[i] = static_cast<float>(gx);
        ddt_raw.data()[i] = static_cast<float>(gdt * (r > 20 ? 1.0 : sigmoid(r)));
        next_dt = dt;
      }
    }
    if (da_log)  // A = -exp(a_log): dA/da_log = A
      for (int64_t k = 0; k < N; ++k)
        da_log->data()[d * N + k] += static_cast<float>(gA[static_cast<size_t>(k)] * A[static_cast<size_t>(k)]);
    if (dd_skip) dd_skip->data()[d] += static_cast<float>(gD);
  }
  for (int64_t i = 0; i < bc.numel(); ++i) dbc.data()[i] = static_cast<float>(dbc_acc[static_cast<size_t>(i)]);
}

}  // namespace mf
