// Hydra's quasiseparable mixer on the CPU (Backend::bidirectional_scan): per sequence and channel, S6's
// recurrence once forward and once backward (scan_core.h, the same code as Mamba's scan; the backward
// direction maps scan step p to token L - 1 - p), each scan's output moved one token away from where
// it was computed (Hydra's shift: token t reads the forward scan at t - 1 and the backward scan at
// t + 1), plus the diagonal u ⊙ (dd + D). Threads split the channels, as in selective_scan.cpp, and the
// backward pass recomputes the states from checkpoints every `chunk` steps.
#include <algorithm>
#include <cmath>
#include <vector>

#include <omp.h>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/scan_core.h"

namespace mf {

namespace {
inline float softplus(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }
inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

struct BiArgs {
  const float *u, *dt_raw, *a_log, *bc, *dd, *d_skip;
  int64_t B, L, D, N, W, b_offset, H;
  int64_t head(int64_t d) const { return d / (D / H); }
  // Step p of direction `dir` (0 forward, 1 backward) of sequence b, channel d.
  int64_t token(int dir, int64_t p) const { return dir == 0 ? p : L - 1 - p; }
  scan::Step step(int dir, int64_t b, int64_t d, int64_t p) const {
    const int64_t t = token(dir, p);
    const float* Bt = bc + (b * L + t) * W + b_offset + 2 * dir * N;
    return scan::Step{softplus(dt_raw[(b * L + t) * 2 * D + dir * D + d]), u[(b * L + t) * D + d], Bt, Bt + N};
  }
};

BiArgs args(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc, int64_t b_offset,
            const Tensor& dd, const Tensor& d_skip) {
  return BiArgs{u.data(), dt_raw.data(), a_log.data(), bc.data(), dd.data(), d_skip.data(), u.dim(0), u.dim(1),
                u.dim(2), a_log.dim(1), bc.dim(2), b_offset, dd.dim(2)};
}
}  // namespace

void CpuBackend::bidirectional_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                    int64_t b_offset, const Tensor& dd, const Tensor& d_skip, Tensor& y) {
  const BiArgs a = args(u, dt_raw, a_log, bc, b_offset, dd, d_skip);
  float* Y = y.data();
#pragma omp parallel
  {
    scan::Work w;
    w.size(a.N, 1, 1);
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < a.B; ++b)
      for (int64_t d = 0; d < a.D; ++d) {
        w.set_channel(a.a_log + d * a.N);
        const int64_t h = a.head(d);
        for (int64_t t = 0; t < a.L; ++t) {
          const int64_t i = (b * a.L + t) * a.D + d;
          Y[i] = a.u[i] * (a.dd[(b * a.L + t) * a.H + h] + a.d_skip[h]);
        }
        for (int dir = 0; dir < 2; ++dir) {
          // the scan's output at token t lands on t + 1 (forward) or t - 1 (backward), if it exists
          const int64_t shift = dir == 0 ? 1 : -1;
          scan::forward(w, a.L, [&](int64_t p) { return a.step(dir, b, d, p); }, [&](int64_t p, float s) {
            const int64_t t = a.token(dir, p) + shift;
            if (t >= 0 && t < a.L) Y[(b * a.L + t) * a.D + d] += s;
          });
        }
      }
  }
}

void CpuBackend::bidirectional_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log,
                                             const Tensor& bc, int64_t b_offset, const Tensor& dd,
                                             const Tensor& d_skip, const Tensor& dy, int64_t chunk, Tensor& du,
                                             Tensor& ddt_raw, Tensor& dbc, Tensor& ddd, Tensor* da_log,
                                             Tensor* dd_skip) {
  const BiArgs a = args(u, dt_raw, a_log, bc, b_offset, dd, d_skip);
  const int64_t N = a.N, L = a.L, D = a.D;
  const float* G = dy.data();
  float *DU = du.data(), *DDT = ddt_raw.data();
  const int threads = omp_get_max_threads();
  // Per thread: the gradients of the four B and C windows (summed over that thread's channels), [B, L, 4N].
  std::vector<std::vector<float>> dbc_part(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    auto& mine = dbc_part[static_cast<size_t>(omp_get_thread_num())];
    mine.assign(static_cast<size_t>(a.B * L * 4 * N), 0.f);
    scan::Work w;
    w.size(N, L, chunk);
#pragma omp for schedule(static)
    for (int64_t d = 0; d < D; ++d) {
      w.set_channel(a.a_log + d * N);
      std::fill(w.gA.begin(), w.gA.end(), 0.0);
      const int64_t h = a.head(d);
      for (int64_t b = 0; b < a.B; ++b) {
        for (int64_t t = 0; t < L; ++t) {  // the diagonal
          const int64_t i = (b * L + t) * D + d;
          DU[i] = G[i] * (a.dd[(b * L + t) * a.H + h] + a.d_skip[h]);
        }
        float* dbc_b = mine.data() + b * L * 4 * N;
        for (int dir = 0; dir < 2; ++dir) {
          const int64_t shift = dir == 0 ? 1 : -1;
          auto grad = [&](int64_t p, float) {  // ds = the gradient of the token the output moved to
            const int64_t t = a.token(dir, p), target = t + shift;
            const float ds = target >= 0 && target < L ? G[(b * L + target) * D + d] : 0.f;
            float* dB = dbc_b + t * 4 * N + 2 * dir * N;
            return scan::StepGrad{ds, dB, dB + N};
          };
          auto put = [&](int64_t p, float gx, float gdt) {
            const int64_t t = a.token(dir, p), j = (b * L + t) * 2 * D + dir * D + d;
            DU[(b * L + t) * D + d] += gx;
            const float r = a.dt_raw[j];
            DDT[j] = gdt * (r > 20.f ? 1.f : sigmoid(r));
          };
          scan::backward(w, L, [&](int64_t p) { return a.step(dir, b, d, p); }, grad, put);
        }
      }
      if (da_log)
        for (int64_t k = 0; k < N; ++k)
          da_log->data()[d * N + k] += static_cast<float>(w.gA[static_cast<size_t>(k)] * w.A[static_cast<size_t>(k)]);
    }
  }
  // dbc: zero outside the four windows, the threads' sums inside.
  float* DBC = dbc.data();
  std::fill(DBC, DBC + dbc.numel(), 0.f);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < a.B * L; ++row)
    for (int64_t k = 0; k < 4 * N; ++k) {
      float acc = 0;
      for (const auto& part : dbc_part) acc += part[static_cast<size_t>(row * 4 * N + k)];
      DBC[row * a.W + a.b_offset + k] = acc;
    }
  // The diagonal's input-dependent part: ddd[t, h] = Σ over the head's channels of dy ⊙ u.
  const int64_t per_head = D / a.H;
  float* DDD = ddd.data();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < a.B * L; ++row)
    for (int64_t h = 0; h < a.H; ++h) {
      float acc = 0;
      for (int64_t c = h * per_head; c < (h + 1) * per_head; ++c) acc += G[row * D + c] * a.u[row * D + c];
      DDD[row * a.H + h] = acc;
    }
  if (dd_skip)
    for (int64_t h = 0; h < a.H; ++h) {
      double acc = 0;
      for (int64_t row = 0; row < a.B * L; ++row) acc += DDD[row * a.H + h];
      dd_skip->data()[h] += static_cast<float>(acc);
    }
}

}  // namespace mf
