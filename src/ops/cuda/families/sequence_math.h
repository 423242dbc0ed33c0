// The arithmetic of the sequence ops' CUDA kernels (families/sequence.cu, scan.cu, ponet.cu): the
// position table, the embedding, RMSNorm, PatchTSMixer's gate, Mamba's causal convolution, causal
// attention, the selective and bidirectional scans and PoNet's pooling. As family_math.h (whose
// helpers it uses): compiled by nvcc for the kernels and by the host compiler for
// tests/test_family_math.cpp, which runs every function against the reference backend.
#pragma once

#include "ops/cuda/families/family_math.h"

namespace mf::cuda::families::math {

// ---- position tables (Strip-MLP, iFormer, the sequence stems) ---------------------------------
// Element i of y [B, N, D] = x[i] + pos[i mod N·D] (the table's first N rows).
template <class T>
MF_HD double add_positions_at(const T* x, const float* pos, int64_t i, int64_t ND) {
  return static_cast<double>(ld(x[i])) + pos[i % ND];
}
// dpos[n, d] += Σ_b dy[b, n, d]: column col = n·D + d of the [B, N·D] view.
template <class T>
struct PositionGrad {
  const T* dy;
  float* dpos;
  int64_t ND;
  MF_HD void operator()(int64_t r, int64_t col, double* v) const { v[0] = ld(dy[r * ND + col]); }
  MF_HD void store(int64_t col, const double* s) const { dpos[col] += static_cast<float>(s[0]); }
};

// ---- embedding, RMSNorm, PatchTSMixer's gate (the sequence models) ----------------------------
// The element of table [V, D] that element i of y [B·N, D] copies (ids: exact integers in float,
// checked by the dispatcher).
MF_HD inline int64_t embedding_source(const float* ids, int64_t i, int64_t D) {
  return static_cast<int64_t>(ids[i / D]) * D + i % D;
}
// Element e = v·D + c of the table's gradient (to be added): Σ of dy[p, c] over the positions p whose
// id is v, listed in increasing order in order[begin[v] .. begin[v + 1]) (host_tables.h).
template <class T>
MF_HD double embedding_grad_at(const T* dy, const int* order, const int* begin, int64_t e, int64_t D) {
  const int64_t v = e / D, c = e % D;
  double sum = 0;
  for (int k = begin[v]; k < begin[v + 1]; ++k) sum += ld(dy[static_cast<int64_t>(order[k]) * D + c]);
  return sum;
}

// RMSNorm over rows of C: per row (a group sum over its channels) Σx² and, for the backward (K = 2),
// Σ dy·w·x; finish keeps inv = 1 / √(Σx²/C + eps) and dot = Σ dy·w·x · inv / C in stats [rows, 2].
template <class T, int K>
struct RmsRowSums {
  const T* x;
  const T* dy;  // null when K = 1
  const float* w;
  double* stats;
  int64_t C;
  float eps;
  MF_HD void operator()(int64_t r, int64_t c, double* v) const {
    const double xv = ld(x[r * C + c]);
    v[0] = xv * xv;
    if constexpr (K == 2) v[1] = static_cast<double>(ld(dy[r * C + c])) * w[c] * xv;
  }
  MF_HD void finish(int64_t r, const double* s) const {
    const double inv = 1 / sqrt(s[0] / static_cast<double>(C) + eps);
    stats[r * 2] = inv;
    if constexpr (K == 2) stats[r * 2 + 1] = s[1] * inv / static_cast<double>(C);
  }
};
template <class T>
MF_HD double rms_norm_at(const T* x, const float* w, const double* stats, int64_t i, int64_t C) {
  return static_cast<double>(ld(x[i])) * stats[(i / C) * 2] * w[i % C];
}
// dx = inv · (dy·w − x·inv·dot).
template <class T>
MF_HD double rms_norm_dx_at(const T* x, const float* w, const T* dy, const double* stats, int64_t i, int64_t C) {
  const double inv = stats[(i / C) * 2], dot = stats[(i / C) * 2 + 1];
  return inv * (static_cast<double>(ld(dy[i])) * w[i % C] - static_cast<double>(ld(x[i])) * inv * dot);
}
// dw[c] += Σ_rows dy · x · inv (column sums).
template <class T>
struct RmsWeightGrad {
  const T *x, *dy;
  const double* stats;
  float* dw;
  int64_t C;
  MF_HD void operator()(int64_t r, int64_t c, double* v) const {
    v[0] = static_cast<double>(ld(dy[r * C + c])) * ld(x[r * C + c]) * stats[r * 2];
  }
  MF_HD void store(int64_t c, const double* s) const { dw[c] += static_cast<float>(s[0]); }
};

// PatchTSMixer's gate over [A, N, I]: the softmax of column (a, i) of the logits at row n, in double.
template <class T>
MF_HD double column_softmax_at(const T* logits, int64_t base, int64_t n, int64_t N, int64_t I, double& mx,
                               double& sum) {
  mx = -INFINITY;
  for (int64_t m = 0; m < N; ++m) mx = fmax(mx, static_cast<double>(ld(logits[base + m * I])));
  sum = 0;
  for (int64_t m = 0; m < N; ++m) sum += exp(static_cast<double>(ld(logits[base + m * I])) - mx);
  return exp(static_cast<double>(ld(logits[base + n * I])) - mx) / sum;
}
// Element i of y = x ⊙ softmax over N.
template <class T>
MF_HD double softmax_gate_at(const T* x, const T* logits, int64_t i, int64_t N, int64_t I) {
  const int64_t a = i / (N * I), n = (i / I) % N, base = a * N * I + i % I;
  double mx, sum;
  return static_cast<double>(ld(x[i])) * column_softmax_at(logits, base, n, N, I, mx, sum);
}
// Element i of dx = dy · s and of dlogits = s · (dy·x − Σ_m s_m dy_m x_m).
template <class T>
MF_HD void softmax_gate_backward_at(const T* x, const T* logits, const T* dy, int64_t i, int64_t N, int64_t I,
                                    double& dx, double& dl) {
  const int64_t a = i / (N * I), n = (i / I) % N, base = a * N * I + i % I;
  double mx, sum;
  const double s = column_softmax_at(logits, base, n, N, I, mx, sum);
  double dot = 0;
  for (int64_t m = 0; m < N; ++m) {
    const int64_t at = base + m * I;
    dot += exp(static_cast<double>(ld(logits[at])) - mx) / sum * ld(dy[at]) * ld(x[at]);
  }
  const double g = ld(dy[i]);
  dx = g * s;
  dl = s * (g * ld(x[i]) - dot);
}

// ---- Mamba's causal convolution over [B, L, C], w [C, 1, K] -------------------------------------
// Element i of y = b[c] + Σ_k w[c, k] · x[t − K + 1 + k] (zero before the start).
template <class T>
MF_HD double causal_conv1d_at(const T* x, const float* w, const float* b, int64_t i, int64_t L, int64_t C, int64_t K) {
  const int64_t c = i % C, t = (i / C) % L, n = i / (C * L);
  double acc = b ? b[c] : 0.0;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t s = t - (K - 1) + k;
    if (s >= 0) acc += static_cast<double>(w[c * K + k]) * ld(x[(n * L + s) * C + c]);
  }
  return acc;
}
// Element i of dx: x[s] feeds y[s + K − 1 − k] through w[c, k].
template <class T>
MF_HD double causal_conv1d_dx_at(const float* w, const T* dy, int64_t i, int64_t L, int64_t C, int64_t K) {
  const int64_t c = i % C, s = (i / C) % L, n = i / (C * L);
  double acc = 0;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t t = s + K - 1 - k;
    if (t < L) acc += static_cast<double>(w[c * K + k]) * ld(dy[(n * L + t) * C + c]);
  }
  return acc;
}
// dw[c, k] += Σ_{n, s} dy[n, s, c] · x[n, s − (K − 1) + k, c]: a group sum per weight (group = c·K + k),
// its terms i = n·L + s.
template <class T>
struct CausalConvWeightGrad {
  const T *x, *dy;
  float* dw;
  int64_t L, C, K;
  MF_HD void operator()(int64_t group, int64_t i, double* v) const {
    const int64_t c = group / K, k = group % K, s = i % L, n = i / L, src = s - (K - 1) + k;
    v[0] = src >= 0 ? static_cast<double>(ld(dy[(n * L + s) * C + c])) * ld(x[(n * L + src) * C + c]) : 0.0;
  }
  MF_HD void finish(int64_t group, const double* sums) const { dw[group] += static_cast<float>(sums[0]); }
};

// ---- causal attention over qkv [B, N, 3·heads·d] ([q | k | v], each head-major) -----------------
// Rows are (b, h, i); query i sees keys j ≤ i. Sums in double, as the reference's.
constexpr int kMaxHeadDim = 128;
struct CausalAttention {
  int64_t N;
  int heads, d;
  double scale;
  MF_HD int64_t at(int64_t b, int64_t i, int part, int64_t h, int64_t c) const {
    const int64_t A = static_cast<int64_t>(heads) * d;
    return (b * N + i) * 3 * A + part * A + h * d + c;
  }
  MF_HD int64_t out_at(int64_t b, int64_t i, int64_t h, int64_t c) const {
    return (b * N + i) * static_cast<int64_t>(heads) * d + h * d + c;
  }
  template <class T>
  MF_HD double score(const T* qkv, int64_t b, int64_t h, int64_t i, int64_t j) const {
    double s = 0;
    for (int c = 0; c < d; ++c) s += static_cast<double>(ld(qkv[at(b, i, 0, h, c)])) * ld(qkv[at(b, j, 1, h, c)]);
    return s * scale;
  }
  // Row (b, h, i)'s maximum and normaliser over j ≤ i.
  template <class T>
  MF_HD void row_stats(const T* qkv, int64_t b, int64_t h, int64_t i, double& mx, double& sum) const {
    mx = -INFINITY;
    for (int64_t j = 0; j <= i; ++j) mx = fmax(mx, score(qkv, b, h, i, j));
    sum = 0;
    for (int64_t j = 0; j <= i; ++j) sum += exp(score(qkv, b, h, i, j) - mx);
  }
  // y of row (b, h, i): Σ_j P_ij v_j, d values.
  template <class T, class O>
  MF_HD void forward_row(const T* qkv, O* y, int64_t b, int64_t h, int64_t i) const {
    double mx, sum, acc[kMaxHeadDim];
    row_stats(qkv, b, h, i, mx, sum);
    for (int c = 0; c < d; ++c) acc[c] = 0;
    for (int64_t j = 0; j <= i; ++j) {
      const double p = exp(score(qkv, b, h, i, j) - mx);
      for (int c = 0; c < d; ++c) acc[c] += p * ld(qkv[at(b, j, 2, h, c)]);
    }
    for (int c = 0; c < d; ++c) y[out_at(b, i, h, c)] = narrow<O>(static_cast<float>(acc[c] / sum));
  }
  // dP_ij = dy_i · v_j.
  template <class T>
  MF_HD double dp(const T* qkv, const T* dy, int64_t b, int64_t h, int64_t i, int64_t j) const {
    double s = 0;
    for (int c = 0; c < d; ++c) s += static_cast<double>(ld(dy[out_at(b, i, h, c)])) * ld(qkv[at(b, j, 2, h, c)]);
    return s;
  }
  // Row (b, h, i)'s statistics for the backward pass: max, normaliser, and D_i = Σ_j P_ij dP_ij.
  template <class T>
  MF_HD void backward_stats(const T* qkv, const T* dy, int64_t b, int64_t h, int64_t i, double* st) const {
    double mx, sum;
    row_stats(qkv, b, h, i, mx, sum);
    double D = 0;
    for (int64_t j = 0; j <= i; ++j) D += exp(score(qkv, b, h, i, j) - mx) / sum * dp(qkv, dy, b, h, i, j);
    st[0] = mx, st[1] = sum, st[2] = D;
  }
  // dq of row i = scale · Σ_{j ≤ i} dS_ij k_j with dS_ij = P_ij (dP_ij − D_i); st: row i's statistics.
  template <class T, class O>
  MF_HD void dq_row(const T* qkv, const T* dy, const double* st, O* dqkv, int64_t b, int64_t h, int64_t i) const {
    double acc[kMaxHeadDim];
    for (int c = 0; c < d; ++c) acc[c] = 0;
    for (int64_t j = 0; j <= i; ++j) {
      const double p = exp(score(qkv, b, h, i, j) - st[0]) / st[1], ds = p * (dp(qkv, dy, b, h, i, j) - st[2]);
      for (int c = 0; c < d; ++c) acc[c] += ds * ld(qkv[at(b, j, 1, h, c)]);
    }
    for (int c = 0; c < d; ++c) dqkv[at(b, i, 0, h, c)] = narrow<O>(static_cast<float>(acc[c] * scale));
  }
  // dk and dv of key j = scale · Σ_{i ≥ j} dS_ij q_i and Σ_{i ≥ j} P_ij dy_i; stats: [B, heads, N, 3].
  template <class T, class O>
  MF_HD void dkv_row(const T* qkv, const T* dy, const double* stats, O* dqkv, int64_t b, int64_t h, int64_t j) const {
    double ak[kMaxHeadDim], av[kMaxHeadDim];
    for (int c = 0; c < d; ++c) ak[c] = av[c] = 0;
    for (int64_t i = j; i < N; ++i) {
      const double* st = stats + ((b * heads + h) * N + i) * 3;
      const double p = exp(score(qkv, b, h, i, j) - st[0]) / st[1], ds = p * (dp(qkv, dy, b, h, i, j) - st[2]);
      for (int c = 0; c < d; ++c) {
        ak[c] += ds * ld(qkv[at(b, i, 0, h, c)]);
        av[c] += p * ld(dy[out_at(b, i, h, c)]);
      }
    }
    for (int c = 0; c < d; ++c) {
      dqkv[at(b, j, 1, h, c)] = narrow<O>(static_cast<float>(ak[c] * scale));
      dqkv[at(b, j, 2, h, c)] = narrow<O>(static_cast<float>(av[c]));
    }
  }
};

// ---- Mamba's selective scan (S6) over [B, L, D], state N ---------------------------------------
// One (sequence b, channel d) at a time, as the reference: the forward recurrence, then the adjoint
// recurrence backwards, chunk by chunk from states checkpointed at the chunks' starts (docs/sequences.md
// has the derivation). A chunk's states are recomputed into a scratch region of global memory per
// (b, d), not a local array: 33 × 64 doubles a thread made every thread of the GPU reserve 17 KB of
// local memory. B and C are shared by all channels, so their gradients are per-channel contributions
// that a separate pass adds over d in order.
constexpr int kMaxState = 64, kMaxScanChunk = 32;
MF_HD inline double softplus(double x) { return x > 20 ? x : log1p(exp(x)); }
MF_HD inline double sigmoid(double x) { return 1 / (1 + exp(-x)); }
MF_HD inline double silu(double x) { return x * sigmoid(x); }
MF_HD inline double silu_grad(double x) {
  const double s = sigmoid(x);
  return s * (1 + x * (1 - s));
}

template <class T>
struct Scan {
  const T *u, *dt_raw, *bc, *z;
  const float *a_log, *d_skip;
  int64_t b_offset, L, D, N, W;
  MF_HD int64_t at(int64_t b, int64_t t, int64_t d) const { return (b * L + t) * D + d; }
  // B of step t (C follows at + N).
  MF_HD const T* b_row(int64_t b, int64_t t) const { return bc + (b * L + t) * W + b_offset; }
  MF_HD double A(int64_t d, int64_t k) const { return -exp(static_cast<double>(a_log[d * N + k])); }
  // h = exp(dt A) h + dt B x, the state update of step t.
  MF_HD void step(int64_t b, int64_t t, int64_t d, const double* h_prev, double* h) const {
    const int64_t i = at(b, t, d);
    const double dt = softplus(ld(dt_raw[i])), x = ld(u[i]);
    const T* Bt = b_row(b, t);
    for (int64_t k = 0; k < N; ++k) h[k] = exp(dt * A(d, k)) * h_prev[k] + dt * ld(Bt[k]) * x;
  }
  template <class O>
  MF_HD void forward(int64_t b, int64_t d, O* y) const {
    double h[kMaxState];
    for (int64_t k = 0; k < N; ++k) h[k] = 0;
    for (int64_t t = 0; t < L; ++t) {
      step(b, t, d, h, h);
      const int64_t i = at(b, t, d);
      const T* Ct = b_row(b, t) + N;
      double s = 0;
      for (int64_t k = 0; k < N; ++k) s += h[k] * ld(Ct[k]);
      y[i] = narrow<O>(static_cast<float>((s + d_skip[d] * static_cast<double>(ld(u[i]))) * silu(ld(z[i]))));
    }
  }
  // The state before each chunk of S steps: ckpt[c·N .. (c+1)·N) = h[c·S − 1] (zero for c = 0).
  MF_HD void checkpoints(int64_t b, int64_t d, int64_t S, double* ckpt) const {
    double h[kMaxState];
    for (int64_t k = 0; k < N; ++k) h[k] = 0;
    for (int64_t t = 0; t < L; ++t) {
      if (t % S == 0)
        for (int64_t k = 0; k < N; ++k) ckpt[(t / S) * N + k] = h[k];
      step(b, t, d, h, h);
    }
  }
  // The adjoint recurrence over chunk c (steps [c·S, min(L, (c+1)·S))), from its end down, for one
  // (b, d). Carries between chunks (this (b, d)'s): lam [N] (λ, zero past the end), next_dt (dt of the
  // step after the chunk, 0 past the end), gA [N] (Σ of A's gradient factor), gD (D's gradient).
  // Writes du, ddt_raw, dz of the chunk's steps, and this channel's contributions to dB and dC of
  // each step tl of the chunk at contrib[((b·S + tl)·D + d)·2N + (k | N + k)].
  template <class O>
  MF_HD void backward_chunk(const T* dy, int64_t b, int64_t d, int64_t c, int64_t S, const double* ckpt, double* lam,
                            double& next_dt, double* gA, double& gD, double* contrib, double* hs, O* du,
                            O* ddt_raw_grad, O* dz) const {
    const int64_t t0 = c * S, t1 = t0 + S < L ? t0 + S : L;
    // hs (this (b, d)'s scratch, (S + 1)·N doubles): hs[tl·N + k] = h[t0 + tl − 1]
    for (int64_t k = 0; k < N; ++k) hs[k] = ckpt[c * N + k];
    for (int64_t t = t0; t < t1; ++t) step(b, t, d, hs + (t - t0) * N, hs + (t - t0 + 1) * N);
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t i = at(b, t, d), tl = t - t0;
      const double r = ld(dt_raw[i]), dt = softplus(r), x = ld(u[i]), zz = ld(z[i]), Dd = d_skip[d];
      const T* Bt = b_row(b, t);
      const T* Ct = Bt + N;
      const double* h_t = hs + (tl + 1) * N;
      const double* h_prev = hs + tl * N;
      double s = 0;
      for (int64_t k = 0; k < N; ++k) s += h_t[k] * ld(Ct[k]);
      const double pre = s + Dd * x, g = ld(dy[i]);
      dz[i] = narrow<O>(static_cast<float>(g * pre * silu_grad(zz)));
      const double dpre = g * silu(zz);
      gD += dpre * x;
      double gx = dpre * Dd, gdt = 0;
      double* out = contrib + ((b * S + tl) * D + d) * 2 * N;
      for (int64_t k = 0; k < N; ++k) {
        const double Ak = A(d, k), Bk = ld(Bt[k]);
        out[N + k] = dpre * h_t[k];  // dC
        lam[k] = dpre * ld(Ct[k]) + exp(next_dt * Ak) * lam[k];
        const double decay = exp(dt * Ak), g_decay = lam[k] * h_prev[k];
        gdt += g_decay * decay * Ak + lam[k] * Bk * x;
        gA[k] += g_decay * decay * dt;
        out[k] = lam[k] * dt * x;  // dB
        gx += lam[k] * dt * Bk;
      }
      du[i] = narrow<O>(static_cast<float>(gx));
      ddt_raw_grad[i] = narrow<O>(static_cast<float>(gdt * (r > 20 ? 1.0 : sigmoid(r))));
      next_dt = dt;
    }
  }
};

// dB and dC of step t = c·S + tl of sequence b, channel j of 2N: the channels' contributions added in
// order of d.
MF_HD inline double scan_bc_grad_at(const double* contrib, int64_t b, int64_t tl, int64_t j, int64_t S, int64_t D,
                                    int64_t N) {
  double sum = 0;
  for (int64_t d = 0; d < D; ++d) sum += contrib[((b * S + tl) * D + d) * 2 * N + j];
  return sum;
}

// ---- PoNet's pooling over p [B, L, 6C] (Q, K, V, O, S, Lo per token) ----------------------------------
// As the reference: the global attention pooling of each sequence (one thread a sequence), the
// segment and local maxima per element, and the backward pass as gathers (a maximum's gradient goes to
// the token that attains it, the first in token order among equals).
template <class T>
struct Ponet {
  const T* p;
  int64_t L, C, heads, hd, segment;
  int local;
  MF_HD int64_t at(int64_t b, int64_t t, int k, int64_t c) const { return (b * L + t) * 6 * C + k * C + c; }
  MF_HD double val(int64_t b, int64_t t, int k, int64_t c) const { return ld(p[at(b, t, k, c)]); }
  MF_HD int64_t argmax(int64_t b, int k, int64_t c, int64_t lo, int64_t hi) const {
    int64_t best = lo;
    for (int64_t t = lo + 1; t < hi; ++t)
      if (val(b, t, k, c) > val(b, best, k, c)) best = t;
    return best;
  }
  MF_HD int64_t seg_lo(int64_t t) const { return t / segment * segment; }
  MF_HD int64_t seg_hi(int64_t t) const { return lmin(L, seg_lo(t) + segment); }
  MF_HD int64_t win_lo(int64_t t) const { return lmax(0, t - local / 2); }
  MF_HD int64_t win_hi(int64_t t) const { return lmin(L, t + local / 2 + 1); }
  // Per-sequence workspace: g [C] (mean query), g2 [C] (pooled value), dg2 [C], dg [C], a [heads·L]
  // (the softmax weights), dscore [heads·L].
  MF_HD int64_t work_per_sequence() const { return 4 * C + 2 * heads * L; }
  // The global aggregation of sequence b: g, a, g2 into w (this sequence's workspace).
  MF_HD void global(int64_t b, double* w) const {
    double *g = w, *g2 = w + C, *a = w + 4 * C;
    for (int64_t c = 0; c < C; ++c) g[c] = g2[c] = 0;
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < C; ++c) g[c] += val(b, t, 0, c) / static_cast<double>(L);
    const double scale = 1 / sqrt(static_cast<double>(hd));
    for (int64_t h = 0; h < heads; ++h) {
      double* ah = a + h * L;
      double mx = -INFINITY, sum = 0;
      for (int64_t t = 0; t < L; ++t) {
        double dot = 0;
        for (int64_t c = h * hd; c < (h + 1) * hd; ++c) dot += g[c] * val(b, t, 1, c);
        ah[t] = dot * scale;
        mx = fmax(mx, ah[t]);
      }
      for (int64_t t = 0; t < L; ++t) sum += (ah[t] = exp(ah[t] - mx));
      for (int64_t t = 0; t < L; ++t) ah[t] /= sum;
      for (int64_t t = 0; t < L; ++t)
        for (int64_t c = h * hd; c < (h + 1) * hd; ++c) g2[c] += ah[t] * val(b, t, 2, c);
    }
  }
  // Element (b, t, c) of y = O ⊙ (g2 + segment max of S) + local max of Lo.
  MF_HD double forward_at(int64_t b, int64_t t, int64_t c, const double* w) const {
    const double s = val(b, argmax(b, 4, c, seg_lo(t), seg_hi(t)), 4, c);
    const double l = val(b, argmax(b, 5, c, win_lo(t), win_hi(t)), 5, c);
    return val(b, t, 3, c) * (w[C + c] + s) + l;
  }
  // dg2[c] = Σ_t dy[t, c] · O[t, c] (channel c of sequence b).
  template <class G>
  MF_HD void dg2_at(const G* dy, int64_t b, int64_t c, double* w) const {
    double sum = 0;
    for (int64_t t = 0; t < L; ++t) sum += static_cast<double>(ld(dy[(b * L + t) * C + c])) * val(b, t, 3, c);
    w[2 * C + c] = sum;
  }
  // The softmax's backward for sequence b: dscore [heads·L] and dg [C] = Σ_t dscore · K.
  MF_HD void global_backward(int64_t b, double* w) const {
    const double *g2d = w + 2 * C, *a = w + 4 * C;
    double *dg = w + 3 * C, *dscore = w + 4 * C + heads * L;
    const double scale = 1 / sqrt(static_cast<double>(hd));
    for (int64_t c = 0; c < C; ++c) dg[c] = 0;
    for (int64_t h = 0; h < heads; ++h) {
      const double* ah = a + h * L;
      double* ds = dscore + h * L;
      double dot = 0;
      for (int64_t t = 0; t < L; ++t) {
        double da = 0;
        for (int64_t c = h * hd; c < (h + 1) * hd; ++c) da += g2d[c] * val(b, t, 2, c);
        ds[t] = da;
        dot += ah[t] * da;
      }
      for (int64_t t = 0; t < L; ++t) {
        ds[t] = ah[t] * (ds[t] - dot) * scale;
        for (int64_t c = h * hd; c < (h + 1) * hd; ++c) dg[c] += ds[t] * val(b, t, 1, c);
      }
    }
  }
  // Element e of dp (overwritten): e = ((b·L + t)·6 + k)·C + c.
  template <class G>
  MF_HD double dp_at(const G* dy, int64_t e, const double* work) const {
    const int64_t c = e % C, k = (e / C) % 6, t = (e / (6 * C)) % L, b = e / (6 * C * L);
    const double* w = work + b * work_per_sequence();
    const double *g = w, *g2 = w + C, *dg2 = w + 2 * C, *dg = w + 3 * C, *a = w + 4 * C, *dscore = a + heads * L;
    const int64_t h = c / hd;
    auto gy = [&](int64_t tt) { return static_cast<double>(ld(dy[(b * L + tt) * C + c])); };
    switch (k) {
      case 0:
        return dg[c] / static_cast<double>(L);
      case 1:
        return dscore[h * L + t] * g[c];
      case 2:
        return a[h * L + t] * dg2[c];
      case 3:
        return gy(t) * (g2[c] + val(b, argmax(b, 4, c, seg_lo(t), seg_hi(t)), 4, c));
      case 4: {  // t is its segment's maximum: every token of the segment sends dy · O
        if (argmax(b, 4, c, seg_lo(t), seg_hi(t)) != t) return 0.0;
        double sum = 0;
        for (int64_t tt = seg_lo(t); tt < seg_hi(t); ++tt) sum += gy(tt) * val(b, tt, 3, c);
        return sum;
      }
      default: {  // the tokens whose local window (symmetric: it holds t) has its maximum at t
        double sum = 0;
        for (int64_t tt = win_lo(t); tt < win_hi(t); ++tt)
          if (argmax(b, 5, c, win_lo(tt), win_hi(tt)) == t) sum += gy(tt);
        return sum;
      }
    }
  }
};

// ---- Hydra's bidirectional scan over [B, L, D] (dt_raw [B, L, 2D], bc holding B_f, C_f, B_b, C_b) ---
// Per (sequence b, channel d), as the reference: the forward scan F (t ascending) and the backward scan
// G (t descending) share A; y[t] = x·(dd[t, h] + D_h) + <F[t−1], C_f[t−1]> + <G[t+1], C_b[t+1]>. The
// backward pass runs each direction's adjoint chunk by chunk from checkpointed states: the forward
// direction's from the end, the backward direction's from the start.
template <class T>
struct BiScan {
  const T *u, *dt_raw, *bc, *dd;
  const float *a_log, *d_skip;
  int64_t b_offset, L, D, N, W, H;
  MF_HD int64_t at(int64_t b, int64_t t, int64_t d) const { return (b * L + t) * D + d; }
  MF_HD int64_t raw_at(int64_t b, int64_t t, int dir, int64_t d) const { return (b * L + t) * 2 * D + dir * D + d; }
  MF_HD double dt(int64_t b, int64_t t, int dir, int64_t d) const { return softplus(ld(dt_raw[raw_at(b, t, dir, d)])); }
  // Part k of step t's B and C (0 B_f, 1 C_f, 2 B_b, 3 C_b).
  MF_HD const T* bcp(int64_t b, int64_t t, int k) const { return bc + (b * L + t) * W + b_offset + k * N; }
  MF_HD double A(int64_t d, int64_t k) const { return -exp(static_cast<double>(a_log[d * N + k])); }
  MF_HD int64_t head(int64_t d) const { return d / (D / H); }
  // s = exp(dt A) s_from + dt B x for direction dir at step t (F from F[t−1], G from G[t+1]).
  MF_HD void step(int64_t b, int64_t t, int dir, int64_t d, const double* from, double* to) const {
    const double dtv = dt(b, t, dir, d), x = ld(u[at(b, t, d)]);
    const T* Bt = bcp(b, t, dir == 0 ? 0 : 2);
    for (int64_t k = 0; k < N; ++k) to[k] = exp(dtv * A(d, k)) * from[k] + dtv * ld(Bt[k]) * x;
  }
  // Forward, first walk (t descending): ybuf[t] = <G[t+1], C_b[t+1]> (0 at the last token).
  MF_HD void forward_g_terms(int64_t b, int64_t d, double* ybuf) const {
    double g[kMaxState];
    for (int64_t k = 0; k < N; ++k) g[k] = 0;
    for (int64_t t = L - 1; t >= 0; --t) {
      double s = 0;
      if (t < L - 1) {
        const T* Cb = bcp(b, t + 1, 3);
        for (int64_t k = 0; k < N; ++k) s += g[k] * ld(Cb[k]);
      }
      ybuf[at(b, t, d)] = s;
      step(b, t, 1, d, g, g);  // g = G[t]
    }
  }
  // Second walk (t ascending): y = x·(dd + D_h) + <F[t−1], C_f[t−1]> + ybuf[t].
  template <class O>
  MF_HD void forward_out(int64_t b, int64_t d, const double* ybuf, O* y) const {
    double f[kMaxState];
    for (int64_t k = 0; k < N; ++k) f[k] = 0;
    const int64_t h = head(d);
    for (int64_t t = 0; t < L; ++t) {
      const int64_t i = at(b, t, d);
      double acc = static_cast<double>(ld(u[i])) * (static_cast<double>(ld(dd[(b * L + t) * H + h])) + d_skip[h]);
      if (t > 0) {
        const T* Cf = bcp(b, t - 1, 1);
        for (int64_t k = 0; k < N; ++k) acc += f[k] * ld(Cf[k]);
      }
      y[i] = narrow<O>(static_cast<float>(acc + ybuf[i]));
      step(b, t, 0, d, f, f);  // f = F[t]
    }
  }
  // Checkpoints per chunk c of S steps [c·S, t1): ckf[c] = F[c·S − 1] (zero for c = 0), ckg[c] =
  // G[t1] (zero for the last chunk).
  MF_HD void checkpoints(int64_t b, int64_t d, int64_t S, double* ckf, double* ckg) const {
    double s[kMaxState];
    for (int64_t k = 0; k < N; ++k) s[k] = 0;
    for (int64_t t = 0; t < L; ++t) {
      if (t % S == 0)
        for (int64_t k = 0; k < N; ++k) ckf[(t / S) * N + k] = s[k];
      step(b, t, 0, d, s, s);
    }
    for (int64_t k = 0; k < N; ++k) s[k] = 0;
    for (int64_t t = L - 1; t >= 0; --t) {
      if (t == L - 1 || (t + 1) % S == 0)  // s = G[t + 1], the end of chunk t / S
        for (int64_t k = 0; k < N; ++k) ckg[(t / S) * N + k] = s[k];
      step(b, t, 1, d, s, s);
    }
  }
  // The forward direction's adjoint over chunk c, t descending (carries lam, next_dt; gA; gu [B, L, D]
  // in double, added to; contributions to dB_f, dC_f as in Scan::backward_chunk).
  template <class G, class O>
  MF_HD void backward_chunk_f(const G* dy, int64_t b, int64_t d, int64_t c, int64_t S, const double* ckf, double* lam,
                              double& next_dt, double* gA, double* gu, double* contrib, double* fs,
                              O* ddt_raw_grad) const {
    const int64_t t0 = c * S, t1 = t0 + S < L ? t0 + S : L;
    // fs (this (b, d)'s scratch, (S + 1)·N doubles): fs[tl·N + k] = F[t0 + tl − 1]
    for (int64_t k = 0; k < N; ++k) fs[k] = ckf[c * N + k];
    for (int64_t t = t0; t < t1; ++t) step(b, t, 0, d, fs + (t - t0) * N, fs + (t - t0 + 1) * N);
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t tl = t - t0, i = at(b, t, d);
      const double ds = t + 1 < L ? static_cast<double>(ld(dy[at(b, t + 1, d)])) : 0.0, dtv = dt(b, t, 0, d),
                   x = ld(u[i]);
      const T *Bf = bcp(b, t, 0), *Cf = bcp(b, t, 1);
      double* out = contrib + ((b * S + tl) * D + d) * 2 * N;
      double gdt = 0;
      for (int64_t k = 0; k < N; ++k) {
        const double Ak = A(d, k), f_t = fs[(tl + 1) * N + k], f_prev = fs[tl * N + k];
        out[N + k] = ds * f_t;  // dC_f
        lam[k] = ds * ld(Cf[k]) + exp(next_dt * Ak) * lam[k];
        const double decay = exp(dtv * Ak);
        gdt += lam[k] * (f_prev * decay * Ak + ld(Bf[k]) * x);
        gA[k] += lam[k] * f_prev * decay * dtv;
        out[k] = lam[k] * dtv * x;  // dB_f
        gu[i] += lam[k] * dtv * ld(Bf[k]);
      }
      const double r = ld(dt_raw[raw_at(b, t, 0, d)]);
      ddt_raw_grad[raw_at(b, t, 0, d)] = narrow<O>(static_cast<float>(gdt * (r > 20 ? 1.0 : sigmoid(r))));
      next_dt = dtv;
    }
  }
  // The backward direction's adjoint over chunk c, t ascending (carries lam, prev_dt).
  template <class G, class O>
  MF_HD void backward_chunk_b(const G* dy, int64_t b, int64_t d, int64_t c, int64_t S, const double* ckg, double* lam,
                              double& prev_dt, double* gA, double* gu, double* contrib, double* gs,
                              O* ddt_raw_grad) const {
    const int64_t t0 = c * S, t1 = t0 + S < L ? t0 + S : L, n = t1 - t0;
    // gs (this (b, d)'s scratch, (S + 1)·N doubles): gs[tl·N + k] = G[t0 + tl]
    for (int64_t k = 0; k < N; ++k) gs[n * N + k] = ckg[c * N + k];
    for (int64_t t = t1 - 1; t >= t0; --t) step(b, t, 1, d, gs + (t - t0 + 1) * N, gs + (t - t0) * N);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t tl = t - t0, i = at(b, t, d);
      const double ds = t > 0 ? static_cast<double>(ld(dy[at(b, t - 1, d)])) : 0.0, dtv = dt(b, t, 1, d), x = ld(u[i]);
      const T *Bb = bcp(b, t, 2), *Cb = bcp(b, t, 3);
      double* out = contrib + ((b * S + tl) * D + d) * 2 * N;
      double gdt = 0;
      for (int64_t k = 0; k < N; ++k) {
        const double Ak = A(d, k), g_t = gs[tl * N + k], g_next = gs[(tl + 1) * N + k];
        out[N + k] = ds * g_t;  // dC_b
        lam[k] = ds * ld(Cb[k]) + exp(prev_dt * Ak) * lam[k];
        const double decay = exp(dtv * Ak);
        gdt += lam[k] * (g_next * decay * Ak + ld(Bb[k]) * x);
        gA[k] += lam[k] * g_next * decay * dtv;
        out[k] = lam[k] * dtv * x;  // dB_b
        gu[i] += lam[k] * dtv * ld(Bb[k]);
      }
      const double r = ld(dt_raw[raw_at(b, t, 1, d)]);
      ddt_raw_grad[raw_at(b, t, 1, d)] = narrow<O>(static_cast<float>(gdt * (r > 20 ? 1.0 : sigmoid(r))));
      prev_dt = dtv;
    }
  }
  // gu's start: dy · (dd + D_h) at element i of [B, L, D].
  template <class G>
  MF_HD double skip_grad_at(const G* dy, int64_t i) const {
    const int64_t d = i % D, bt = i / D, h = head(d);
    return static_cast<double>(ld(dy[i])) * (static_cast<double>(ld(dd[bt * H + h])) + d_skip[h]);
  }
  // ddd[b, t, h] = Σ over head h's channels of dy · x (element e of [B, L, H]).
  template <class G>
  MF_HD double ddd_at(const G* dy, int64_t e) const {
    const int64_t h = e % H, bt = e / H, per = D / H;
    double sum = 0;
    for (int64_t d = h * per; d < (h + 1) * per; ++d)
      sum += static_cast<double>(ld(dy[bt * D + d])) * ld(u[bt * D + d]);
    return sum;
  }
  // dd_skip[h]'s sum: over head h's channels, the sequences and the tokens.
  template <class G>
  MF_HD double d_skip_grad(const G* dy, int64_t h, int64_t B) const {
    const int64_t per = D / H;
    double sum = 0;
    for (int64_t d = h * per; d < (h + 1) * per; ++d)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < L; ++t) sum += static_cast<double>(ld(dy[at(b, t, d)])) * ld(u[at(b, t, d)]);
    return sum;
  }
};

}  // namespace mf::cuda::families::math
