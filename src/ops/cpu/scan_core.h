// The selective scan of one channel of one sequence along one direction, shared by the CPU kernels of
// Mamba's S6 (selective_scan.cpp) and Hydra's bidirectional SSM (bidirectional_scan.cpp):
//   h[p, n] = exp(dt[p] A[n]) h[p-1, n] + dt[p] x[p] B[p, n],   h[-1] = 0,   s[p] = Σ_n h[p, n] C[p, n]
// p counts steps in scan order; the caller's `step(p)` says where step p's dt, x, B and C are (a
// reversed scan maps p to L - 1 - p), so one code path serves both directions. What the kernels do
// around the scan (S6's skip and gate, Hydra's shift and diagonal) stays in the kernels.
//
// The backward pass keeps the state only every `chunk` steps (a checkpoint) and, chunk by chunk from
// the end, recomputes the chunk's states before running the adjoint recurrence through it:
//   λ[p] = ds[p] C[p] + exp(dt[p+1] A) ⊙ λ[p+1]
// (docs/sequences.md has the derivation): chunk · N + (L / chunk) · N floats per thread, not L · N.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

namespace mf::scan {

// exp(x) for x <= 0, written so that the compiler vectorises the loops that call it: the decay
// exp(dt A[n]) of every state is the scan's hot spot (N per step, several times over in the
// backward pass), and libm's scalar expf kept each step's N lanes apart (5x slower end to end).
// x = r ln2 + y with r = round(x log2 e) and |y| <= ln2 / 2 (Cody-Waite's two-part ln2 keeps y
// exact to float rounding), e^y by its degree-7 Taylor polynomial (truncation below 6e-9
// relative), times 2^r built in the exponent bits. Within 2 ulp of expf over [-87, 0]; below -87
// (exp < 1.7e-38, a state that has decayed away) it returns 2^-126 rather than a denormal.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float r = (x * 1.44269504f + 12582912.f) - 12582912.f;  // round to nearest (1.5 * 2^23 trick)
  const float y = (x - r * 0.693359375f) + r * 2.12194440e-4f;
  float p = 1.f / 5040.f;
  p = p * y + 1.f / 720.f;
  p = p * y + 1.f / 120.f;
  p = p * y + 1.f / 24.f;
  p = p * y + 1.f / 6.f;
  p = p * y + 0.5f;
  p = p * y + 1.f;
  p = p * y + 1.f;
  const auto bits = static_cast<uint32_t>(static_cast<int32_t>(r) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

struct Step {
  float dt;        // the step size, softplus already applied
  float x;         // the input
  const float* B;  // N values
  const float* C;  // N values
};

// Where the backward pass puts step p's B and C gradients (accumulated), and ds[p] = d loss / d s[p].
struct StepGrad {
  float ds;
  float* dB;
  float* dC;
};

// One thread's buffers, sized once for the longest sequence it scans.
struct Work {
  std::vector<float> A, h, lam, checkpoints, states;
  std::vector<double> gA;
  int64_t N = 0, T = 0;
  void size(int64_t n, int64_t length, int64_t chunk) {
    N = n;
    T = std::max<int64_t>(1, std::min(chunk, length));
    const int64_t chunks = (length + T - 1) / T;
    A.assign(static_cast<size_t>(n), 0.f);
    h.assign(static_cast<size_t>(n), 0.f);
    lam.assign(static_cast<size_t>(n), 0.f);
    checkpoints.assign(static_cast<size_t>(std::max<int64_t>(chunks, 1) * n), 0.f);
    states.assign(static_cast<size_t>((T + 1) * n), 0.f);
    gA.assign(static_cast<size_t>(n), 0.0);
  }
  // A[n] = -exp(a_log[n]) of the channel about to be scanned
  void set_channel(const float* a_log) {
    for (int64_t k = 0; k < N; ++k) A[static_cast<size_t>(k)] = -std::exp(a_log[k]);
  }
};

// Runs the recurrence over L steps and calls emit(p, s[p]) for each.
template <class StepAt, class Emit>
inline void forward(Work& w, int64_t L, const StepAt& step, const Emit& emit) {
  const int64_t N = w.N;
  float* h = w.h.data();
  const float* A = w.A.data();
  std::fill_n(h, N, 0.f);
  for (int64_t p = 0; p < L; ++p) {
    const Step st = step(p);
    const float dtx = st.dt * st.x;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < N; ++k) {
      h[k] = exp_nonpositive(st.dt * A[k]) * h[k] + dtx * st.B[k];
      s += h[k] * st.C[k];
    }
    emit(p, s);
  }
}

// The adjoint of forward(). grad(p, s[p]) returns step p's StepGrad (s[p] recomputed, for callers
// whose ds depends on it); put(p, dx, ddt) receives d loss / d x[p] and d loss / d dt[p] through
// the scan. d loss / d A[n] (Σ over the steps) is added to w.gA (in double), which the caller zeroes
// and reads per channel.
template <class StepAt, class Grad, class Put>
inline void backward(Work& w, int64_t L, const StepAt& step, const Grad& grad, const Put& put) {
  const int64_t N = w.N, T = w.T, chunks = (L + T - 1) / T;
  const float* A = w.A.data();
  float* states = w.states.data();
  float* lam = w.lam.data();
  auto advance = [&](int64_t p, const float* prev, float* next) {  // h[p] from h[p-1]
    const Step st = step(p);
    const float dtx = st.dt * st.x;
#pragma omp simd
    for (int64_t k = 0; k < N; ++k) next[k] = exp_nonpositive(st.dt * A[k]) * prev[k] + dtx * st.B[k];
  };
  // Forward: only the state entering each chunk is kept.
  std::fill_n(states, N, 0.f);
  for (int64_t c = 0; c < chunks; ++c) {
    std::copy_n(states, N, w.checkpoints.data() + c * N);
    for (int64_t p = c * T; p < std::min(L, (c + 1) * T); ++p) {
      advance(p, states, states + N);
      std::copy_n(states + N, N, states);
    }
  }
  // Backward, chunk by chunk from the end: states[(p - p0 + 1) N + k] = h[p, k] recomputed.
  std::fill_n(lam, N, 0.f);
  float next_dt = 0;  // dt[p + 1]; λ's carry is zero past the end
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t p0 = c * T, p1 = std::min(L, p0 + T);
    std::copy_n(w.checkpoints.data() + c * N, N, states);
    for (int64_t p = p0; p < p1; ++p) advance(p, states + (p - p0) * N, states + (p - p0 + 1) * N);
    for (int64_t p = p1 - 1; p >= p0; --p) {
      const Step st = step(p);
      const float* h_t = states + (p - p0 + 1) * N;
      const float* h_prev = states + (p - p0) * N;
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < N; ++k) s += h_t[k] * st.C[k];
      const StepGrad g = grad(p, s);
      float gx = 0, gdt = 0;
      double* gA = w.gA.data();
#pragma omp simd reduction(+ : gx, gdt)
      for (int64_t k = 0; k < N; ++k) {
        g.dC[k] += g.ds * h_t[k];
        lam[k] = g.ds * st.C[k] + exp_nonpositive(next_dt * A[k]) * lam[k];
        const float decay = exp_nonpositive(st.dt * A[k]), g_decay = lam[k] * h_prev[k] * decay;
        gdt += g_decay * A[k] + lam[k] * st.B[k] * st.x;
        gA[k] += static_cast<double>(g_decay) * st.dt;
        g.dB[k] += lam[k] * st.dt * st.x;
        gx += lam[k] * st.dt * st.B[k];
      }
      put(p, gx, gdt);
      next_dt = st.dt;
    }
  }
}

}  // namespace mf::scan
