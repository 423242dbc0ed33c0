// Mamba's selective scan on the CPU (Backend::selective_scan): the recurrence is sequential in time
// but independent per channel d, so the threads split the channels (each owns its own A_log and D
// gradients) and walk the whole sequence. The recurrence itself, and its backward pass that keeps a
// state only every `chunk` steps and recomputes the rest (no L × L matrix, chunk · N + (L / chunk) · N
// floats per thread), are scan_core.h's, shared with Hydra's bidirectional scan; this file adds S6's
// skip D and gate SiLU(z). B and C are shared by all channels, so their gradients are summed in a
// buffer per thread and reduced once at the end.
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
    scan::Work w;
    w.size(a.N, 1, 1);
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < a.B; ++b)
      for (int64_t d = 0; d < a.D; ++d) {
        w.set_channel(a.a_log + d * a.N);
        auto step = [&](int64_t t) {
          const int64_t i = (b * a.L + t) * a.D + d;
          const float* Bt = a.bc + (b * a.L + t) * a.W + a.b_offset;
          return scan::Step{softplus(a.dt_raw[i]), a.u[i], Bt, Bt + a.N};
        };
        scan::forward(w, a.L, step, [&](int64_t t, float s) {
          const int64_t i = (b * a.L + t) * a.D + d;
          const float zz = a.z[i];
          Y[i] = (s + a.d_skip[d] * a.u[i]) * zz * sigmoid(zz);
        });
      }
  }
}

void CpuBackend::selective_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                         int64_t b_offset, const Tensor& d_skip, const Tensor& z, const Tensor& dy,
                                         int64_t chunk, Tensor& du, Tensor& ddt_raw, Tensor& dbc, Tensor& dz,
                                         Tensor* da_log, Tensor* dd_skip) {
  const ScanArgs a{u.data(), dt_raw.data(), a_log.data(), bc.data(), d_skip.data(), z.data(),
                   u.dim(0),  u.dim(1),      u.dim(2),     a_log.dim(1), bc.dim(2), b_offset};
  const int64_t N = a.N, L = a.L;
  const float* G = dy.data();
  float *DU = du.data(), *DDT = ddt_raw.data(), *DZ = dz.data();
  const int threads = omp_get_max_threads();
  // Per thread: the gradients of B and C (summed over that thread's channels), [B, L, 2N].
  std::vector<std::vector<float>> dbc_part(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    auto& mine = dbc_part[static_cast<size_t>(omp_get_thread_num())];
    mine.assign(static_cast<size_t>(a.B * L * 2 * N), 0.f);
    scan::Work w;
    w.size(N, L, chunk);
#pragma omp for schedule(static)
    for (int64_t d = 0; d < a.D; ++d) {
      w.set_channel(a.a_log + d * N);
      std::fill(w.gA.begin(), w.gA.end(), 0.0);
      double gD = 0;
      const float Dd = a.d_skip[d];
      for (int64_t b = 0; b < a.B; ++b) {
        auto step = [&](int64_t t) {
          const int64_t i = (b * L + t) * a.D + d;
          const float* Bt = a.bc + (b * L + t) * a.W + a.b_offset;
          return scan::Step{softplus(a.dt_raw[i]), a.u[i], Bt, Bt + N};
        };
        float* dbc_b = mine.data() + b * L * 2 * N;
        auto grad = [&](int64_t t, float s) {  // the gate's and the skip's gradients, then dpre into the scan
          const int64_t i = (b * L + t) * a.D + d;
          const float x = a.u[i], zz = a.z[i], sz = sigmoid(zz), g = G[i];
          DZ[i] = g * (s + Dd * x) * sz * (1.f + zz * (1.f - sz));
          const float dpre = g * zz * sz;
          gD += static_cast<double>(dpre) * x;
          DU[i] = dpre * Dd;
          return scan::StepGrad{dpre, dbc_b + t * 2 * N, dbc_b + t * 2 * N + N};
        };
        auto put = [&](int64_t t, float gx, float gdt) {
          const int64_t i = (b * L + t) * a.D + d;
          const float r = a.dt_raw[i];
          DU[i] += gx;
          DDT[i] = gdt * (r > 20.f ? 1.f : sigmoid(r));
        };
        scan::backward(w, L, step, grad, put);
      }
      if (da_log)
        for (int64_t k = 0; k < N; ++k)
          da_log->data()[d * N + k] += static_cast<float>(w.gA[static_cast<size_t>(k)] * w.A[static_cast<size_t>(k)]);
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
