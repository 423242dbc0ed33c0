// Mamba's selective scan (S6) and Hydra's bidirectional scan, forward and backward: one thread per
// (sequence, channel) walking the recurrences in double (family_math.h's Scan and BiScan), as the
// reference does. The backward pass recomputes
// the states chunk by chunk from checkpoints, writes each channel's share of B's and C's gradients,
// and adds the shares over the channels in order (deterministic, no atomics). Correct first: a
// sequential walk per thread, not a parallel scan.
#include "ops/cuda/families/launch.cuh"

namespace mf::cuda::families {
namespace {

// Threads of a block for the walks: each keeps up to 17 KB of states in local memory.
constexpr int kScanThreads = 64;

template <class T>
__global__ void scan_forward_kernel(math::Scan<T> sc, T* y, int64_t n) {
  MF_GRID_STRIDE(r, n) { sc.forward(r / sc.D, r % sc.D, y); }
}

template <class T>
__global__ void scan_checkpoint_kernel(math::Scan<T> sc, int64_t S, int64_t chunks, double* ckpt, int64_t n) {
  MF_GRID_STRIDE(r, n) { sc.checkpoints(r / sc.D, r % sc.D, S, ckpt + r * chunks * sc.N); }
}

template <class T>
__global__ void scan_backward_chunk_kernel(math::Scan<T> sc, const T* dy, int64_t c, int64_t S, int64_t chunks,
                                           const double* ckpt, double* lam, double* next_dt, double* gA, double* gD,
                                           double* contrib, double* states, T* du, T* ddt_raw, T* dz, int64_t n) {
  MF_GRID_STRIDE(r, n) {
    sc.backward_chunk(dy, r / sc.D, r % sc.D, c, S, ckpt + r * chunks * sc.N, lam + r * sc.N, next_dt[r], gA + r * sc.N,
                      gD[r], contrib, states + r * (S + 1) * sc.N, du, ddt_raw, dz);
  }
}

// e = (b·S + tl)·2N + j: dB, dC of step c·S + tl.
template <class T>
__global__ void scan_bc_grad_kernel(const double* contrib, T* dbc, int64_t c, int64_t S, int64_t L, int64_t D,
                                    int64_t N, int64_t W, int64_t b_offset, int64_t n) {
  MF_GRID_STRIDE(e, n) {
    const int64_t j = e % (2 * N), tl = (e / (2 * N)) % S, b = e / (2 * N * S), t = c * S + tl;
    if (t < L)
      dbc[(b * L + t) * W + b_offset + j] =
          narrow<T>(static_cast<float>(math::scan_bc_grad_at(contrib, b, tl, j, S, D, N)));
  }
}

// da_log[d, k] += A · Σ_b gA[b, d, k]; dd_skip[d] += Σ_b gD[b, d]; the sequences in order.
__global__ void scan_param_grad_kernel(const double* gA, const double* gD, const float* a_log, float* da_log,
                                       float* dd_skip, int64_t B, int64_t D, int64_t N) {
  MF_GRID_STRIDE(d, D) {
    if (da_log)
      for (int64_t k = 0; k < N; ++k) {
        double sum = 0;
        for (int64_t b = 0; b < B; ++b) sum += gA[(b * D + d) * N + k];
        da_log[d * N + k] += static_cast<float>(sum * -exp(static_cast<double>(a_log[d * N + k])));
      }
    if (dd_skip) {
      double sum = 0;
      for (int64_t b = 0; b < B; ++b) sum += gD[b * D + d];
      dd_skip[d] += static_cast<float>(sum);
    }
  }
}

template <class T>
__global__ void bi_forward_g_kernel(math::BiScan<T> sc, double* ybuf, int64_t n) {
  MF_GRID_STRIDE(r, n) { sc.forward_g_terms(r / sc.D, r % sc.D, ybuf); }
}

template <class T>
__global__ void bi_forward_out_kernel(math::BiScan<T> sc, const double* ybuf, T* y, int64_t n) {
  MF_GRID_STRIDE(r, n) { sc.forward_out(r / sc.D, r % sc.D, ybuf, y); }
}

template <class T>
__global__ void bi_checkpoint_kernel(math::BiScan<T> sc, int64_t S, int64_t chunks, double* ckf, double* ckg,
                                     int64_t n) {
  MF_GRID_STRIDE(r, n) { sc.checkpoints(r / sc.D, r % sc.D, S, ckf + r * chunks * sc.N, ckg + r * chunks * sc.N); }
}

template <class T>
__global__ void bi_gu_init_kernel(math::BiScan<T> sc, const T* dy, double* gu, int64_t n) {
  MF_GRID_STRIDE(i, n) { gu[i] = sc.skip_grad_at(dy, i); }
}

template <class T>
__global__ void bi_chunk_kernel(math::BiScan<T> sc, int dir, const T* dy, int64_t c, int64_t S, int64_t chunks,
                                const double* ck, double* lam, double* carry_dt, double* gA, double* gu,
                                double* contrib, double* states, T* ddt_raw, int64_t n) {
  MF_GRID_STRIDE(r, n) {
    const int64_t b = r / sc.D, d = r % sc.D;
    double* mine = states + r * (S + 1) * sc.N;  // this (b, d)'s scratch for the chunk's states
    if (dir == 0)
      sc.backward_chunk_f(dy, b, d, c, S, ck + r * chunks * sc.N, lam + r * sc.N, carry_dt[r], gA + r * sc.N, gu,
                          contrib, mine, ddt_raw);
    else
      sc.backward_chunk_b(dy, b, d, c, S, ck + r * chunks * sc.N, lam + r * sc.N, carry_dt[r], gA + r * sc.N, gu,
                          contrib, mine, ddt_raw);
  }
}

template <class T>
__global__ void bi_finish_kernel(math::BiScan<T> sc, const T* dy, const double* gu, T* du, T* ddd, int64_t B) {
  const int64_t n = B * sc.L * sc.D, m = B * sc.L * sc.H;
  MF_GRID_STRIDE(i, n + m) {
    if (i < n)
      du[i] = narrow<T>(static_cast<float>(gu[i]));
    else
      ddd[i - n] = narrow<T>(static_cast<float>(sc.ddd_at(dy, i - n)));
  }
}

template <class T>
__global__ void bi_skip_grad_kernel(math::BiScan<T> sc, const T* dy, float* dd_skip, int64_t B) {
  MF_GRID_STRIDE(h, sc.H) { dd_skip[h] += static_cast<float>(sc.d_skip_grad(dy, h, B)); }
}

int64_t chunk_steps(int64_t chunk) { return chunk < 1 ? 1 : chunk > math::kMaxScanChunk ? math::kMaxScanChunk : chunk; }

}  // namespace

template <class T>
cudaError_t selective_scan(const T* u, const T* dt_raw, const float* a_log, const T* bc, int64_t b_offset,
                           const float* d_skip, const T* z, T* y, int64_t B, int64_t L, int64_t D, int64_t N, int64_t W,
                           cudaStream_t s) {
  if (N < 1 || N > math::kMaxState) return cudaErrorInvalidValue;
  const int64_t n = B * D;
  if (n <= 0 || L <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  const math::Scan<E> sc{dptr(u), dptr(dt_raw), dptr(bc), dptr(z), a_log, d_skip, b_offset, L, D, N, W};
  scan_forward_kernel<<<blocks_for(n, kScanThreads), kScanThreads, 0, s>>>(sc, dptr(y), n);
  return cudaGetLastError();
}

// [checkpoints B·D·chunks·N | λ B·D·N | next dt B·D | gA B·D·N | gD B·D | contributions B·S·D·2N |
//  a chunk's states B·D·(S + 1)·N]
int64_t selective_scan_backward_work(int64_t B, int64_t L, int64_t D, int64_t N, int64_t chunk) {
  const int64_t S = chunk_steps(chunk), chunks = (L + S - 1) / S;
  return B * D * (chunks * N + 2 * N + 2) + B * S * D * 2 * N + B * D * (S + 1) * N;
}

template <class T>
cudaError_t selective_scan_backward(const T* u, const T* dt_raw, const float* a_log, const T* bc, int64_t b_offset,
                                    const float* d_skip, const T* z, const T* dy, int64_t chunk, T* du, T* ddt_raw,
                                    T* dbc, T* dz, float* da_log, float* dd_skip, int64_t B, int64_t L, int64_t D,
                                    int64_t N, int64_t W, double* work, cudaStream_t s) {
  if (N < 1 || N > math::kMaxState) return cudaErrorInvalidValue;
  const int64_t n = B * D;
  if (n <= 0 || L <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  const math::Scan<E> sc{dptr(u), dptr(dt_raw), dptr(bc), dptr(z), a_log, d_skip, b_offset, L, D, N, W};
  const int64_t S = chunk_steps(chunk), chunks = (L + S - 1) / S;
  double* ckpt = work;
  double* lam = ckpt + n * chunks * N;
  double* next_dt = lam + n * N;
  double* gA = next_dt + n;
  double* gD = gA + n * N;
  double* contrib = gD + n;
  double* states = contrib + B * S * D * 2 * N;
  cudaError_t e = cudaMemsetAsync(lam, 0, static_cast<size_t>(n * (2 * N + 2)) * sizeof(double), s);
  if (e != cudaSuccess) return e;
  e = cudaMemsetAsync(dbc, 0, static_cast<size_t>(B * L * W) * sizeof(T), s);
  if (e != cudaSuccess) return e;
  scan_checkpoint_kernel<<<blocks_for(n, kScanThreads), kScanThreads, 0, s>>>(sc, S, chunks, ckpt, n);
  for (int64_t c = chunks - 1; c >= 0; --c) {
    scan_backward_chunk_kernel<<<blocks_for(n, kScanThreads), kScanThreads, 0, s>>>(
        sc, dptr(dy), c, S, chunks, ckpt, lam, next_dt, gA, gD, contrib, states, dptr(du), dptr(ddt_raw), dptr(dz), n);
    const int64_t m = B * S * 2 * N;
    scan_bc_grad_kernel<<<blocks_for(m), 256, 0, s>>>(contrib, dptr(dbc), c, S, L, D, N, W, b_offset, m);
  }
  if (da_log || dd_skip) scan_param_grad_kernel<<<blocks_for(D), 256, 0, s>>>(gA, gD, a_log, da_log, dd_skip, B, D, N);
  return cudaGetLastError();
}

int64_t bidirectional_scan_work(int64_t B, int64_t L, int64_t D) { return B * L * D; }

template <class T>
cudaError_t bidirectional_scan(const T* u, const T* dt_raw, const float* a_log, const T* bc, int64_t b_offset,
                               const T* dd, const float* d_skip, T* y, int64_t B, int64_t L, int64_t D, int64_t N,
                               int64_t W, int64_t H, double* work, cudaStream_t s) {
  if (N < 1 || N > math::kMaxState || H < 1 || D % H != 0) return cudaErrorInvalidValue;
  const int64_t n = B * D;
  if (n <= 0 || L <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  const math::BiScan<E> sc{dptr(u), dptr(dt_raw), dptr(bc), dptr(dd), a_log, d_skip, b_offset, L, D, N, W, H};
  bi_forward_g_kernel<<<blocks_for(n, kScanThreads), kScanThreads, 0, s>>>(sc, work, n);
  bi_forward_out_kernel<<<blocks_for(n, kScanThreads), kScanThreads, 0, s>>>(sc, work, dptr(y), n);
  return cudaGetLastError();
}

// [ckf, ckg: B·D·chunks·N each | λ B·D·N | carried dt B·D | gA B·D·N | gu B·L·D | contributions B·S·D·2N |
//  a chunk's states B·D·(S + 1)·N]
int64_t bidirectional_scan_backward_work(int64_t B, int64_t L, int64_t D, int64_t N, int64_t chunk) {
  const int64_t S = chunk_steps(chunk), chunks = (L + S - 1) / S;
  return B * D * (2 * chunks * N + 2 * N + 1) + B * L * D + B * S * D * 2 * N + B * D * (S + 1) * N;
}

template <class T>
cudaError_t bidirectional_scan_backward(const T* u, const T* dt_raw, const float* a_log, const T* bc, int64_t b_offset,
                                        const T* dd, const float* d_skip, const T* dy, int64_t chunk, T* du, T* ddt_raw,
                                        T* dbc, T* ddd, float* da_log, float* dd_skip, int64_t B, int64_t L, int64_t D,
                                        int64_t N, int64_t W, int64_t H, double* work, cudaStream_t s) {
  if (N < 1 || N > math::kMaxState || H < 1 || D % H != 0) return cudaErrorInvalidValue;
  const int64_t n = B * D;
  if (n <= 0 || L <= 0) return cudaSuccess;
  using E = typename DevT<T>::type;
  const math::BiScan<E> sc{dptr(u), dptr(dt_raw), dptr(bc), dptr(dd), a_log, d_skip, b_offset, L, D, N, W, H};
  const int64_t S = chunk_steps(chunk), chunks = (L + S - 1) / S;
  double* ckf = work;
  double* ckg = ckf + n * chunks * N;
  double* lam = ckg + n * chunks * N;
  double* carry_dt = lam + n * N;
  double* gA = carry_dt + n;
  double* gu = gA + n * N;
  double* contrib = gu + B * L * D;
  double* states = contrib + B * S * D * 2 * N;
  cudaError_t e = cudaMemsetAsync(lam, 0, static_cast<size_t>(n * (2 * N + 1)) * sizeof(double), s);
  if (e != cudaSuccess) return e;
  e = cudaMemsetAsync(dbc, 0, static_cast<size_t>(B * L * W) * sizeof(T), s);
  if (e != cudaSuccess) return e;
  bi_checkpoint_kernel<<<blocks_for(n, kScanThreads), kScanThreads, 0, s>>>(sc, S, chunks, ckf, ckg, n);
  bi_gu_init_kernel<<<blocks_for(B * L * D), 256, 0, s>>>(sc, dptr(dy), gu, B * L * D);
  const int64_t m = B * S * 2 * N;
  // The forward direction's adjoint, from the last chunk; then the backward direction's, from the first.
  for (int64_t c = chunks - 1; c >= 0; --c) {
    bi_chunk_kernel<<<blocks_for(n, kScanThreads), kScanThreads, 0, s>>>(
        sc, 0, dptr(dy), c, S, chunks, ckf, lam, carry_dt, gA, gu, contrib, states, dptr(ddt_raw), n);
    scan_bc_grad_kernel<<<blocks_for(m), 256, 0, s>>>(contrib, dptr(dbc), c, S, L, D, N, W, b_offset, m);
  }
  e = cudaMemsetAsync(lam, 0, static_cast<size_t>(n * (N + 1)) * sizeof(double), s);  // λ and the carried dt
  if (e != cudaSuccess) return e;
  for (int64_t c = 0; c < chunks; ++c) {
    bi_chunk_kernel<<<blocks_for(n, kScanThreads), kScanThreads, 0, s>>>(
        sc, 1, dptr(dy), c, S, chunks, ckg, lam, carry_dt, gA, gu, contrib, states, dptr(ddt_raw), n);
    scan_bc_grad_kernel<<<blocks_for(m), 256, 0, s>>>(contrib, dptr(dbc), c, S, L, D, N, W, b_offset + 2 * N, m);
  }
  bi_finish_kernel<<<blocks_for(B * L * (D + H)), 256, 0, s>>>(sc, dptr(dy), gu, dptr(du), dptr(ddd), B);
  if (da_log) scan_param_grad_kernel<<<blocks_for(D), 256, 0, s>>>(gA, nullptr, a_log, da_log, nullptr, B, D, N);
  if (dd_skip) bi_skip_grad_kernel<<<blocks_for(H), 256, 0, s>>>(sc, dptr(dy), dd_skip, B);
  return cudaGetLastError();
}

#define MF_SCAN_INSTANTIATE(T)                                                                                         \
  template cudaError_t selective_scan<T>(const T*, const T*, const float*, const T*, int64_t, const float*, const T*,  \
                                         T*, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);               \
  template cudaError_t selective_scan_backward<T>(const T*, const T*, const float*, const T*, int64_t, const float*,   \
                                                  const T*, const T*, int64_t, T*, T*, T*, T*, float*, float*,         \
                                                  int64_t, int64_t, int64_t, int64_t, int64_t, double*, cudaStream_t); \
  template cudaError_t bidirectional_scan<T>(const T*, const T*, const float*, const T*, int64_t, const T*,            \
                                             const float*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,   \
                                             double*, cudaStream_t);                                                   \
  template cudaError_t bidirectional_scan_backward<T>(                                                                 \
      const T*, const T*, const float*, const T*, int64_t, const T*, const float*, const T*, int64_t, T*, T*, T*, T*,  \
      float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double*, cudaStream_t);
MF_SCAN_INSTANTIATE(float)
MF_SCAN_INSTANTIATE(bf16)
#undef MF_SCAN_INSTANTIATE

}  // namespace mf::cuda::families
