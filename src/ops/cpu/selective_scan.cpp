// Mamba's selective scan on the CPU (Backend::selective_scan): the recurrence is sequential in time
// but independent per channel d, so the threads split the channels (each owns its own A_log and D
// gradients) and walk the whole sequence. Memory is O(L) per channel only in the inputs: the
// backward pass keeps the state every `chunk` steps (a checkpoint), and for each chunk, last to
// first, recomputes that chunk's states from its checkpoint before running the adjoint recurrence
// through it — chunk · N + (L / chunk) · N floats per thread instead of L · N, no L × L matrix.
// B and C are shared by all channels, so their gradients are summed in a buffer per thread and
// reduced once at the end.
#include <algorithm>
#include <cmath>
#include <vector>

#include <omp.h>

#include "ops/cpu/cpu_backend.h"

namespace mf {

namespace {
inline float softplus(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }
inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

struct ScanArgs {
  const float *u, *dt_raw, *a_log, *bc, *d_skip, *z;
  int64_t B, L, D, N, W, b_offset;
};
}  // namespace

void CpuBackend::selective_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                int64_t b_offset, const Tensor& d_skip, const Tensor& z, Tensor& y) {
  const ScanArgs a{u.data(), dt_raw.data(), a_log.data(), bc.data(), d_skip.data(), z.data(),
                   u.dim(0),  u.dim(1),      u.dim(2),     a_log.dim(1), bc.dim(2), b_offset};
  float* Y = y.data();
#pragma omp parallel
  {
    std::vector<float> h(static_cast<size_t>(a.N)), A(static_cast<size_t>(a.N));
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < a.B; ++b)
      for (int64_t d = 0; d < a.D; ++d) {
        for (int64_t k = 0; k < a.N; ++k) A[static_cast<size_t>(k)] = -std::exp(a.a_log[d * a.N + k]);
        std::fill(h.begin(), h.end(), 0.f);
        for (int64_t t = 0; t < a.L; ++t) {
          const int64_t i = (b * a.L + t) * a.D + d;
          const float dt = softplus(a.dt_raw[i]), x = a.u[i], dtx = dt * x;
          const float* Bt = a.bc + (b * a.L + t) * a.W + a.b_offset;
          const float* Ct = Bt + a.N;
          float s = 0;
          for (int64_t k = 0; k < a.N; ++k) {
            const auto kk = static_cast<size_t>(k);
            h[kk] = std::exp(dt * A[kk]) * h[kk] + dtx * Bt[k];
            s += h[kk] * Ct[k];
          }
          const float zz = a.z[i];
          Y[i] = (s + a.d_skip[d] * x) * zz * sigmoid(zz);
        }
      }
  }
}

void CpuBackend::selective_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                         int64_t b_offset, const Tensor& d_skip, const Tensor& z, const Tensor& dy,
                                         int64_t chunk, Tensor& du, Tensor& ddt_raw, Tensor& dbc, Tensor& dz,
                                         Tensor* da_log, Tensor* dd_skip) {
  const ScanArgs a{u.data(), dt_raw.data(), a_log.data(), bc.data(), d_skip.data(), z.data(),
                   u.dim(0),  u.dim(1),      u.dim(2),     a_log.dim(1), bc.dim(2), b_offset};
  const int64_t N = a.N, L = a.L, T = std::min<int64_t>(chunk, L), chunks = (L + T - 1) / T;
  const float* G = dy.data();
  float *DU = du.data(), *DDT = ddt_raw.data(), *DZ = dz.data();
  const int threads = omp_get_max_threads();
  // Per thread: the gradients of B and C (summed over that thread's channels), [B, L, 2N].
  std::vector<std::vector<float>> dbc_part(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    auto& mine = dbc_part[static_cast<size_t>(omp_get_thread_num())];
    mine.assign(static_cast<size_t>(a.B * L * 2 * N), 0.f);
    std::vector<float> A(static_cast<size_t>(N)), lam(static_cast<size_t>(N));
    std::vector<float> checkpoints(static_cast<size_t>(chunks * N)), states(static_cast<size_t>((T + 1) * N));
    std::vector<double> gA(static_cast<size_t>(N));
#pragma omp for schedule(static)
    for (int64_t d = 0; d < a.D; ++d) {
      for (int64_t k = 0; k < N; ++k) A[static_cast<size_t>(k)] = -std::exp(a.a_log[d * N + k]);
      std::fill(gA.begin(), gA.end(), 0.0);
      double gD = 0;
      const float Dd = a.d_skip[d];
      for (int64_t b = 0; b < a.B; ++b) {
        auto step = [&](int64_t t, const float* prev, float* next) {  // h[t] from h[t-1]
          const int64_t i = (b * L + t) * a.D + d;
          const float dt = softplus(a.dt_raw[i]), dtx = dt * a.u[i];
          const float* Bt = a.bc + (b * L + t) * a.W + a.b_offset;
          for (int64_t k = 0; k < N; ++k) next[k] = std::exp(dt * A[static_cast<size_t>(k)]) * prev[k] + dtx * Bt[k];
        };
        // Forward: only the state entering each chunk is kept.
        std::fill(states.begin(), states.begin() + N, 0.f);
        for (int64_t c = 0; c < chunks; ++c) {
          std::copy_n(states.data(), N, checkpoints.data() + c * N);
          for (int64_t t = c * T; t < std::min(L, (c + 1) * T); ++t) {
            step(t, states.data(), states.data() + N);
            std::copy_n(states.data() + N, N, states.data());
          }
        }
        // Backward, chunk by chunk from the end: states[(t - t0 + 1) N + k] = h[t, k] recomputed.
        std::fill(lam.begin(), lam.end(), 0.f);
        float next_dt = 0;
        float* dbc_b = mine.data() + b * L * 2 * N;
        for (int64_t c = chunks - 1; c >= 0; --c) {
          const int64_t t0 = c * T, t1 = std::min(L, t0 + T);
          std::copy_n(checkpoints.data() + c * N, N, states.data());
          for (int64_t t = t0; t < t1; ++t) step(t, states.data() + (t - t0) * N, states.data() + (t - t0 + 1) * N);
          for (int64_t t = t1 - 1; t >= t0; --t) {
            const int64_t i = (b * L + t) * a.D + d;
            const float r = a.dt_raw[i], dt = softplus(r), x = a.u[i], zz = a.z[i], sz = sigmoid(zz);
            const float* Bt = a.bc + (b * L + t) * a.W + a.b_offset;
            const float* Ct = Bt + N;
            const float* h_t = states.data() + (t - t0 + 1) * N;
            const float* h_prev = states.data() + (t - t0) * N;
            float s = 0;
            for (int64_t k = 0; k < N; ++k) s += h_t[k] * Ct[k];
            const float pre = s + Dd * x, g = G[i];
            DZ[i] = g * pre * sz * (1.f + zz * (1.f - sz));
            const float dpre = g * zz * sz;
            gD += static_cast<double>(dpre) * x;
            float gx = dpre * Dd, gdt = 0;
            float* dB = dbc_b + t * 2 * N;
            float* dC = dB + N;
            for (int64_t k = 0; k < N; ++k) {
              const auto kk = static_cast<size_t>(k);
              dC[k] += dpre * h_t[k];
              lam[kk] = dpre * Ct[k] + std::exp(next_dt * A[kk]) * lam[kk];
              const float decay = std::exp(dt * A[kk]), g_decay = lam[kk] * h_prev[k] * decay;
              gdt += g_decay * A[kk] + lam[kk] * Bt[k] * x;
              gA[kk] += static_cast<double>(g_decay) * dt;
              dB[k] += lam[kk] * dt * x;
              gx += lam[kk] * dt * Bt[k];
            }
            DU[i] = gx;
            DDT[i] = gdt * (r > 20.f ? 1.f : sigmoid(r));
            next_dt = dt;
          }
        }
      }
      if (da_log)
        for (int64_t k = 0; k < N; ++k)
          da_log->data()[d * N + k] += static_cast<float>(gA[static_cast<size_t>(k)] * A[static_cast<size_t>(k)]);
      if (dd_skip) dd_skip->data()[d] += static_cast<float>(gD);
    }
  }
  // dbc: zero outside B and C, the threads' sums inside.
  float* DBC = dbc.data();
  std::fill(DBC, DBC + dbc.numel(), 0.f);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < a.B * L; ++row)
    for (int64_t k = 0; k < 2 * N; ++k) {
      float acc = 0;
      for (const auto& part : dbc_part) acc += part[static_cast<size_t>(row * 2 * N + k)];
      DBC[row * a.W + a.b_offset + k] = acc;
    }
}

}  // namespace mf
