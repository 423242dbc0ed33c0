// Backward kernels of the CUDA backend: see backward_kernels.h. Simple by design: grid-stride loops
// with one thread per output element, and the two reductions of backward_common.cuh (column sums,
// group sums), both in double and atomics-free. The convolutions' kernels are in conv_backward.cu,
// the gated product's in glu_backward.cu.
// Short fixed sums that are no reductions over the batch (PoolFormer's pool − x backward, col2im:
// at most k² terms an element) are in float, like their forward kernels.
#include "ops/cuda/backward_kernels.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "ops/cuda/activation_grad.cuh"
#include "ops/cuda/backward_common.cuh"
#include "ops/cuda/norm_backward_vec.cuh"

namespace mf::cuda::backward {
using namespace detail;
namespace {

// dbias[m] += Σ_b Σ_c dy[b, m, c]: group m's n = B·C values, element i = (b, c) = (i / C, i % C).
struct TokenBiasGrad {
  const float* dy;
  float* dbias;
  int64_t M, C;
  __device__ void operator()(int64_t m, int64_t i, double* v) const {
    const int64_t b = i / C, c = i - b * C;
    v[0] = dy[(b * M + m) * C + c];
  }
  __device__ void finish(int64_t m, const double* s) const { dbias[m] += static_cast<float>(s[0]); }
};

// ---- complex product's weight gradient ----------------------------------------------------------
// Column j = br · C + c of a [rows / brows, brows · C] view: row k is the input row k · brows + br.
struct ComplexWeightGrad {
  const float *a, *dy;
  float* db;
  int64_t brows, C;
  __device__ void operator()(int64_t k, int64_t j, double* v) const {
    const int64_t br = j / C, c = j - br * C, at = (k * brows + br) * 2 * C;
    const double ar = a[at + c], ai = a[at + C + c], gr = dy[at + c], gi = dy[at + C + c];
    v[0] = gr * ar + gi * ai;
    v[1] = gi * ar - gr * ai;
  }
  __device__ void store(int64_t j, const double* s) const {
    const int64_t br = j / C, c = j - br * C;
    db[br * 2 * C + c] += static_cast<float>(s[0]);
    db[br * 2 * C + C + c] += static_cast<float>(s[1]);
  }
};

// ---- norms ---------------------------------------------------------------------------------------
// stats [groups, 4]: mean, rstd, mean(g), mean(g · x̂)
// The two formulas every norm backward shares (per group of n values, in double):
// mean and rstd = 1 / sqrt(var + eps) from Σx and Σx² (var clamped at 0: the cancellation loses
// ~2 of double's 16 digits), and dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)) with g = dy · w.
__device__ __forceinline__ void norm_statistics(double sum, double sum_sq, double n, float eps, double& mean,
                                                double& rstd) {
  mean = sum / n;
  double var = sum_sq / n - mean * mean;
  if (var < 0) var = 0;
  rstd = 1.0 / sqrt(var + static_cast<double>(eps));
}
__device__ __forceinline__ float norm_dx_value(double rstd, double g, double xh, double mean_g, double mean_g_xh) {
  return static_cast<float>(rstd * (g - mean_g - xh * mean_g_xh));
}

// A group's stats [4] from its sums s = {Σx, Σx², Σg, Σg·x} over n values: mean, rstd, mean(g) and
// mean(g · x̂) = rstd · (mean(g · x) − mean · mean(g)).
__device__ __forceinline__ void store_norm_moments(const double* s, int64_t n, float eps, double* st) {
  double mean, rstd;
  const double dn = static_cast<double>(n);
  norm_statistics(s[0], s[1], dn, eps, mean, rstd);
  const double mean_g = s[2] / dn;
  st[0] = mean;
  st[1] = rstd;
  st[2] = mean_g;
  st[3] = rstd * (s[3] / dn - mean * mean_g);
}

// The statistics and the gradient's two means in one pass over x and dy (GroupNorm's long groups,
// long LayerNorm rows): Σx, Σx², Σg and Σg·x, then mean(g · x̂) = rstd · (mean(g · x) − mean ·
// mean(g)). In double the cancellation costs a few of its 16 digits, far from the float result.
// The two passes this replaces (the statistics, then the means) were 8 % of a bf16 poolformer_s12
// training step's kernel time (H100, 2026-12-05).
template <class T>
struct NormAllMoments {
  const T* x;
  const float* w;
  const T* dy;
  double* stats;
  int64_t n, C;
  float eps;
  __device__ void operator()(int64_t g, int64_t i, double* v) const {
    const int64_t at = g * n + i;
    const double xv = ld(x[at]);
    const double gg = static_cast<double>(ld(dy[at])) * w[i % C];
    v[0] = xv;
    v[1] = xv * xv;
    v[2] = gg;
    v[3] = gg * xv;
  }
  __device__ void finish(int64_t g, const double* s) const { store_norm_moments(s, n, eps, stats + g * 4); }
};

// norm_dx_kernel's values, 16 bytes a thread with 32-bit indices (n and C multiples of the vector,
// so a vector lies in one group and its channels are consecutive; the launcher checks): the 64-bit
// divisions a value made the scalar kernel about 2.5× slower than its bytes.
template <class T>
__global__ void norm_dx_vec_kernel(const T* x, const float* w, const T* dy, const double* stats, const T* res, T* dx,
                                   uint32_t vectors, uint32_t n, uint32_t C) {
  constexpr int V = kVec<T>;
  for (uint32_t v = blockIdx.x * blockDim.x + threadIdx.x; v < vectors; v += gridDim.x * blockDim.x) {
    const uint32_t at = v * V, g = at / n, c = (at - g * n) % C;
    const double* st = stats + static_cast<size_t>(g) * 4;
    float xs[V], ds[V], out[V];
    load16(x + at, xs);
    load16(dy + at, ds);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const double xh = (xs[e] - st[0]) * st[1];
      const double gg = static_cast<double>(ds[e]) * w[c + e];
      out[e] = norm_dx_value(st[1], gg, xh, st[2], st[3]);
    }
    if (res) {
      float rs[V];
      load16(res + at, rs);
#pragma unroll
      for (int e = 0; e < V; ++e) out[e] = rs[e] + out[e];
    }
    store16(dx + at, out);
  }
}

template <class T>
__global__ void norm_dx_kernel(const T* x, const float* w, const T* dy, const double* stats, const T* res, T* dx,
                               int64_t total, int64_t n, int64_t C) {
  MF_GRID_STRIDE(at, total) {
    const int64_t g = at / n, i = at % n;
    const double* st = stats + g * 4;
    const double xh = (ld(x[at]) - st[0]) * st[1];
    const double gg = static_cast<double>(ld(dy[at])) * w[i % C];
    const float v = norm_dx_value(st[1], gg, xh, st[2], st[3]);
    dx[at] = narrow<T>(res ? ld(res[at]) + v : v);
  }
}

// LayerNorm's backward for short rows (n ≤ kWarpRowMax): one warp per row does what NormAllMoments
// and norm_dx_kernel do in two launches with a block per group — the statistics, the
// two sums of dx's formula and dx — and leaves the four statistics (double) for the parameter
// gradients' column sums. Each lane sums its elements in float (at most 64); the lanes' sums are
// added in double (the butterfly: a fixed order). The variance is two-pass (Σ (x − mean)², no
// cancellation), rstd a float rsqrt refined by one Newton step in double, and 1 / n a multiply.
// (With every element and every row scalar in double — a division, a square root and the
// conversions, which all 32 lanes execute — this kernel ran at a quarter of memory speed on rows of
// 64 channels: 7 % of convformer_s18's training kernel time.)
constexpr int64_t kWarpRowMax = 2048;
template <class T>
__global__ void norm_rows_backward_kernel(const T* x, const float* w, const T* dy, float eps, const T* res, T* dx,
                                          double* stats, int64_t rows, int n, int C, double inv_n) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5; r < rows; r += warps) {
    const T* xr = x + r * n;
    const T* gr = dy + r * n;
    float s = 0.f;
    for (int i = lane; i < n; i += 32) s += ld(xr[i]);
    const double mean = warp_sum(static_cast<double>(s)) * inv_n;
    const float meanf = static_cast<float>(mean);
    float q = 0.f;
    for (int i = lane; i < n; i += 32) {
      const float d = ld(xr[i]) - meanf;
      q = fmaf(d, d, q);
    }
    const double rstd = detail::row_group_rstd<32>(q, mean, meanf, inv_n, eps);
    const float rstdf = static_cast<float>(rstd);
    float t0f = 0.f, t1f = 0.f;
    for (int i = lane; i < n; i += 32) {
      const float xh = (ld(xr[i]) - meanf) * rstdf;
      const float gg = ld(gr[i]) * w[i % C];
      t0f += gg;
      t1f = fmaf(gg, xh, t1f);
    }
    const double t0 = warp_sum(static_cast<double>(t0f)) * inv_n;
    const double t1 = warp_sum(static_cast<double>(t1f)) * inv_n;
    const float m0 = static_cast<float>(t0), m1 = static_cast<float>(t1);
    for (int i = lane; i < n; i += 32) {
      const float xh = (ld(xr[i]) - meanf) * rstdf;
      const float gg = ld(gr[i]) * w[i % C];
      const float v = rstdf * (gg - m0 - xh * m1);
      dx[r * n + i] = narrow<T>(res ? ld(res[r * n + i]) + v : v);
    }
    if (lane == 0) {
      stats[r * 4 + 0] = mean;
      stats[r * 4 + 1] = rstd;
      stats[r * 4 + 2] = t0;
      stats[r * 4 + 3] = t1;
    }
  }
}

// The same rows with the parameter gradients in the same pass (for rows vec does not take, and with
// METAFORMER_CUDA_NORM_BWD=fused; =split runs the two passes below instead). LayerNorm only
// (n = C ≤ 32 · NPL). norm_rows_backward_kernel leaves the statistics for a second pass,
// NormParamGrads, which reads x and dy again and sums dy · x̂ and dy per channel in double (with the
// row kernel itself, 12 % of convformer_s18's bf16 kernel time: 10.8 of 89.8 ms in two steps).
// Here each lane keeps its NPL elements of the row in registers (channels lane, lane + 32, …: x and
// dy are read once), computes dx with the row kernel's arithmetic in the row kernel's order, and
// adds dy · x̂ and dy into per-lane float sums over the rows its warp takes. Block b takes rows
// [b · per, (b + 1) · per), warp w every eighth of them from w: a fixed assignment. The block's 8
// warps are then added in order in double into partial[(b · 2 + k) · C + c], and
// column_finish_kernel adds the blocks in order: deterministic, without atomics, as the two-pass
// version. The float sums run over at most per / 8 rows (per ≤ kFusedNormRowsPerBlock until the
// chunk cap, about 100 rows at 400k rows; norm_backward_vec.cuh's lanes take fewer, R rows a warp).
// The cap: 512 chunks, about as many blocks as are resident at once (two to four an SM on 132 SMs),
// so each block streams its rows and the partials stay small. At 2048 the blocks' K · C double
// partials came to 12 MB for ConvFormer's 320-channel rows (1,568 chunks) and column_finish_kernel,
// C / 32 blocks, read them back in 17 µs a call: 1.4 of 62.5 ms in two convformer_s18 steps (H100,
// 2026-12-06), beside the partial writes' share of the rows kernel.
// With res (a block's skip gradient) dx = res + that; with RS also times the res scale rs[c], and a
// third per-lane sum, x · res (the res scale's gradient: x is the block's input as well as the
// norm's), goes to partial[(b · 3 + 2) · C + c] (K = 3 sums a chunk instead of 2).
constexpr int kFusedNormMaxNpl = 24;  // channels a lane: LayerNorm rows up to 768
constexpr int64_t kFusedNormRowsPerBlock = 16, kFusedNormMaxChunks = 512;
inline int64_t fused_norm_chunks(int64_t rows) {
  const int64_t c = (rows + kFusedNormRowsPerBlock - 1) / kFusedNormRowsPerBlock;
  return c < 1 ? 1 : c > kFusedNormMaxChunks ? kFusedNormMaxChunks : c;
}

template <class T, int NPL, bool RS = false>
__global__ void __launch_bounds__(kThreads)
    norm_rows_backward_fused_kernel(const T* x, const float* w, const T* dy, float eps, const T* res, const float* rs,
                                    T* dx, bool params, int64_t rows, int n, double inv_n, double* partial) {
  constexpr int kWarps = kThreads / 32, K = RS ? 3 : 2, NR = RS ? NPL : 1;
  __shared__ float red[kWarps][32 * NPL];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t chunks = gridDim.x, per = (rows + chunks - 1) / chunks;
  const int64_t r0 = blockIdx.x * per, r1 = r0 + per < rows ? r0 + per : rows;
  float wv[NPL], pw[NPL], pb[NPL], sv[NR], pr[NR];
#pragma unroll
  for (int j = 0; j < NPL; ++j) {
    const int i = lane + 32 * j;
    wv[j] = i < n ? w[i] : 0.f;
    pw[j] = pb[j] = 0.f;
    if constexpr (RS) sv[j] = i < n ? rs[i] : 0.f, pr[j] = 0.f;
  }
  for (int64_t r = r0 + warp; r < r1; r += kWarps) {
    const T* xr = x + r * n;
    const T* gr = dy + r * n;
    float xv[NPL], gv[NPL];
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      const int i = lane + 32 * j;
      xv[j] = i < n ? ld(xr[i]) : 0.f;
      gv[j] = i < n ? ld(gr[i]) : 0.f;
      if (i < n) s += xv[j];
    }
    const double mean = warp_sum(static_cast<double>(s)) * inv_n;
    const float meanf = static_cast<float>(mean);
    float q = 0.f;
#pragma unroll
    for (int j = 0; j < NPL; ++j)
      if (lane + 32 * j < n) {
        const float d = xv[j] - meanf;
        q = fmaf(d, d, q);
      }
    const double rstd = detail::row_group_rstd<32>(q, mean, meanf, inv_n, eps);
    const float rstdf = static_cast<float>(rstd);
    float t0f = 0.f, t1f = 0.f;
#pragma unroll
    for (int j = 0; j < NPL; ++j)
      if (lane + 32 * j < n) {
        const float xh = (xv[j] - meanf) * rstdf;
        const float gg = gv[j] * wv[j];
        t0f += gg;
        t1f = fmaf(gg, xh, t1f);
      }
    const float m0 = static_cast<float>(warp_sum(static_cast<double>(t0f)) * inv_n);
    const float m1 = static_cast<float>(warp_sum(static_cast<double>(t1f)) * inv_n);
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      const int i = lane + 32 * j;
      if (i < n) {
        const float xh = (xv[j] - meanf) * rstdf;
        const float gg = gv[j] * wv[j];
        const float v = rstdf * (gg - m0 - xh * m1);
        if constexpr (RS) {
          const float sk = ld(res[r * n + i]);
          dx[r * n + i] = narrow<T>(sk * sv[j] + v);
          pr[j] = fmaf(xv[j], sk, pr[j]);
        } else {
          dx[r * n + i] = narrow<T>(res ? ld(res[r * n + i]) + v : v);
        }
        pw[j] = fmaf(gv[j], xh, pw[j]);
        pb[j] += gv[j];
      }
    }
  }
  if (!params) return;  // the same for every thread of the launch: no barrier is skipped by some only
  for (int k = 0; k < K; ++k) {
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      float p = k == 0 ? pw[j] : pb[j];
      if constexpr (RS) p = k == 2 ? pr[j] : p;
      red[warp][lane + 32 * j] = p;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < n; c += kThreads) {
      double t = 0;
#pragma unroll
      for (int y = 0; y < kWarps; ++y) t += red[y][c];
      partial[(static_cast<int64_t>(blockIdx.x) * K + k) * n + c] = t;
    }
    __syncthreads();
  }
}

// Which LayerNorm backward: the fused pass 16 bytes a load (norm_backward_vec.cuh; the default since
// the H100 A/B of 2026-12-06, cuda_check.sh normvec: 2.8-4.3 % more training images/s; rows it does
// not take run the fused kernel), the fused kernel above (METAFORMER_CUDA_NORM_BWD=fused, the default
// from the H200 A/B of 2026-12-05: 3-5 % more images/s than split, docs/cuda-log.md), or the row
// kernel and a column-sum pass (=split).
int norm_backward_choice() {
  static const int choice = [] {
    const int c = env_choice("METAFORMER_CUDA_NORM_BWD", {"fused", "split", "vec"});
    return c < 0 ? 2 : c;
  }();
  return choice;
}
bool norm_backward_fused() { return norm_backward_choice() != 1; }

template <class T, bool RS>
void launch_norm_rows_backward_fused(const T* x, const float* w, const T* dy, float eps, const T* res, const float* rs,
                                     T* dx, bool params, int64_t rows, int n, double* partial, cudaStream_t s) {
  const unsigned grid = static_cast<unsigned>(fused_norm_chunks(rows));
  const double inv_n = 1.0 / static_cast<double>(n);
  auto go = [&](auto kernel) {
    kernel<<<grid, kThreads, 0, s>>>(x, w, dy, eps, res, rs, dx, params, rows, n, inv_n, partial);
  };
  if (n <= 64) go(norm_rows_backward_fused_kernel<T, 2, RS>);
  else if (n <= 128) go(norm_rows_backward_fused_kernel<T, 4, RS>);
  else if (n <= 256) go(norm_rows_backward_fused_kernel<T, 8, RS>);
  else if (n <= 384) go(norm_rows_backward_fused_kernel<T, 12, RS>);
  else if (n <= 512) go(norm_rows_backward_fused_kernel<T, 16, RS>);
  else go(norm_rows_backward_fused_kernel<T, kFusedNormMaxNpl, RS>);
}

// column_finish_kernel's store for the fused LayerNorm backward with a res scale (K = 3).
struct NormSkipParamGrads {
  float *dw, *db, *d_rs;
  __device__ void store(int64_t c, const double* s) const {
    if (dw) dw[c] += static_cast<float>(s[0]);
    if (db) db[c] += static_cast<float>(s[1]);
    if (d_rs) d_rs[c] += static_cast<float>(s[2]);
  }
};

template <class T>
struct NormParamGrads {
  const T *x, *dy;
  const double* stats;
  float *dw, *db;
  int64_t n, C;
  __device__ void operator()(int64_t r, int64_t c, double* v) const {
    const int64_t at = r * C + c, g = at / n;
    const double xh = (ld(x[at]) - stats[g * 4 + 0]) * stats[g * 4 + 1];
    const double gv = ld(dy[at]);
    v[0] = gv * xh;
    v[1] = gv;
  }
  __device__ void store(int64_t c, const double* s) const {
    if (dw) dw[c] += static_cast<float>(s[0]);
    if (db) db[c] += static_cast<float>(s[1]);
  }
  // column_partials_vec_kernel's view: the vector's columns lie in one group (n is a multiple of C)
  static constexpr int kV = kVec<T>;
  bool aligned() const { return kernels::aligned16(x) && kernels::aligned16(dy); }
  template <class A>
  __device__ void vec(int64_t r, int64_t c0, A (&v)[2][kV]) const {
    const int64_t at = r * C + c0, g = at / n;
    const double mean = stats[g * 4 + 0], rstd = stats[g * 4 + 1];
    float xs[kV], ds[kV];
    load16(x + at, xs);
    load16(dy + at, ds);
#pragma unroll
    for (int e = 0; e < kV; ++e) {
      const double xh = (xs[e] - mean) * rstd;
      v[0][e] += static_cast<A>(ds[e] * xh);
      v[1][e] += ds[e];
    }
  }
};

// GroupNorm's backward in one reduction pass (the default since the H200 A/B of 2026-12-06,
// cuda_check.sh gnbwd: poolformer_s12's bf16 training 2-3 % more images/s; METAFORMER_CUDA_GN_BWD=split
// runs the previous kernels): the
// default reads x and dy three times, for the statistics and the gradient's means (NormAllMoments),
// for dx, and for the parameter gradients (NormParamGrads, which needs the statistics first). Here
// one column pass over the [n / C rows, groups · C columns] view (a column is one channel of one
// sample) sums x, x², dy and dy · x per (sample, channel). Everything else follows from those cells:
// per sample Σx, Σx², Σg = Σ_c w_c Σdy and Σg·x = Σ_c w_c Σdy·x (gn_onepass_stats_kernel), per
// channel dW = Σ_s rstd_s (Σdy·x − mean_s Σdy) and db = Σ_s Σdy (gn_onepass_params_kernel). Sums in
// double and in a fixed order (deterministic; other bits than the default's).
template <class T>
struct GnCellSums {
  const T *x, *dy;
  double* cells;  // [groups · C][4]
  int64_t n, C;
  __device__ void operator()(int64_t r, int64_t j, double* v) const {
    const int64_t g = j / C, c = j - g * C, at = g * n + r * C + c;
    const double xv = ld(x[at]), gv = ld(dy[at]);
    v[0] = xv;
    v[1] = xv * xv;
    v[2] = gv;
    v[3] = gv * xv;
  }
  __device__ void store(int64_t j, const double* s) const {
    for (int k = 0; k < 4; ++k) cells[j * 4 + k] = s[k];
  }
  // column_partials_vec_kernel's view (METAFORMER_CUDA_COLSUM=fvec or fbatch; the default, auto, still
  // gives these sums the scalar kernel until a GPU run says which is faster): kV channels of one sample a
  // thread, 16 bytes of x and of dy a row. The loads go through __ldg's uint4 form, which nvcc cannot
  // split: written as plain uint4 reads, both came out as 4- and 8-byte pieces (nvcc 13.0,
  // 2026-12-06). A thread's float sums are over at most 32 rows a chunk, added across the block and
  // the chunks in double, as the other float views do.
  static constexpr int kV = kVec<T>;
  // C a multiple of kV: a vector's channels then lie in one sample, and every address is aligned
  bool aligned() const { return C % kV == 0 && kernels::aligned16(x) && kernels::aligned16(dy); }
  template <class A>
  __device__ void vec(int64_t r, int64_t j0, A (&v)[4][kV]) const {
    const int64_t g = j0 / C, at = g * n + r * C + (j0 - g * C);
    float xs[kV], ds[kV];
    kernels::unpack_vec<T>(__ldg(reinterpret_cast<const uint4*>(x + at)), xs);
    kernels::unpack_vec<T>(__ldg(reinterpret_cast<const uint4*>(dy + at)), ds);
#pragma unroll
    for (int e = 0; e < kV; ++e) {
      v[0][e] += static_cast<A>(xs[e]);
      v[1][e] += static_cast<A>(xs[e] * xs[e]);
      v[2][e] += static_cast<A>(ds[e]);
      v[3][e] += static_cast<A>(ds[e] * xs[e]);
    }
  }
};

// One block a sample: its channels' cells added in a fixed order (lanes, then block_sum), then the
// statistics as NormAllMoments::finish writes them.
__global__ void gn_onepass_stats_kernel(const double* cells, const float* w, double* stats, int64_t n, int64_t C,
                                        float eps) {
  __shared__ double scratch[32];
  const int64_t g = blockIdx.x;
  double a[4] = {0, 0, 0, 0};
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const double* cell = cells + (g * C + c) * 4;
    a[0] += cell[0];
    a[1] += cell[1];
    a[2] += w[c] * cell[2];
    a[3] += w[c] * cell[3];
  }
  double t[4];
  for (int k = 0; k < 4; ++k) t[k] = block_sum(a[k], scratch);
  if (threadIdx.x == 0) store_norm_moments(t, n, eps, stats + g * 4);
}

// kColTile channels a block, a lane each; the block's 8 rows of lanes take every 8th sample (row r: r,
// r + 8, …), then the first row adds the 8 partial sums in order (deterministic). The first version
// (one thread a channel over all samples: one or two blocks at PoolFormer's widths) took 57 µs a call
// (H200, 2026-12-06).
constexpr int kGnParamRows = 8;
__global__ void gn_onepass_params_kernel(const double* cells, const double* stats, float* dw, float* db,
                                         int64_t groups, int64_t C) {
  __shared__ double part[kGnParamRows][kColTile][2];
  const int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  double sw = 0, sb = 0;
  if (c < C)
    for (int64_t g = threadIdx.y; g < groups; g += kGnParamRows) {
      const double* cell = cells + (g * C + c) * 4;
      sw += stats[g * 4 + 1] * (cell[3] - stats[g * 4 + 0] * cell[2]);
      sb += cell[2];
    }
  part[threadIdx.y][threadIdx.x][0] = sw;
  part[threadIdx.y][threadIdx.x][1] = sb;
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
  double tw = 0, tb = 0;
  for (int r = 0; r < kGnParamRows; ++r) tw += part[r][threadIdx.x][0], tb += part[r][threadIdx.x][1];
  if (dw) dw[c] += static_cast<float>(tw);
  if (db) db[c] += static_cast<float>(tb);
}

bool group_norm_backward_onepass() {
  static const bool on = env_choice("METAFORMER_CUDA_GN_BWD", {"split", "onepass"}) != 0;
  return on;
}

// ---- activation ----------------------------------------------------------------------------------
template <class T>
__global__ void activation_backward_kernel(const T* x, Act act, const T* dy, T* dx, int64_t n) {
  MF_GRID_STRIDE(i, n)
  dx[i] = narrow<T>(static_cast<float>(static_cast<double>(ld(dy[i])) * act_derivative(act, ld(x[i]))));
}

// dx of the i-th 16-byte vector (4 floats or 8 bf16); leaves x's values in v and dy's in g.
template <class T>
__device__ __forceinline__ void activation_dx_vector(const T* x, const Act& act, const T* dy, T* dx, int64_t i,
                                                     float (&v)[kVec<T>], float (&g)[kVec<T>]) {
  constexpr int V = kVec<T>;
  float d[V];
  load16(x + i * V, v);
  load16(dy + i * V, g);
#pragma unroll
  for (int j = 0; j < V; ++j) d[j] = g[j] * act_derivative_f(act, v[j]);
  store16(dx + i * V, d);
}

// 16 bytes a thread: n a multiple of kVec<T>, the pointers 16-byte aligned.
template <class T>
__global__ void activation_backward_vec_kernel(const T* x, Act act, const T* dy, T* dx, int64_t nv) {
  MF_GRID_STRIDE(i, nv) {
    float v[kVec<T>], g[kVec<T>];
    activation_dx_vector(x, act, dy, dx, i, v, g);
  }
}

// StarReLU's two scalar gradients, and dx (as the vector kernel computes it) in the same pass: one
// read of x and dy instead of two (the separate passes were 9 % of convformer_s18's backward).
template <class T>
struct StarReluParams {
  const T *x, *dy;
  float *dscale, *dbias;
  Act act;
  T* dx;
  __device__ void operator()(int64_t, int64_t i, double* v) const {
    const float xf = ld(x[i]), gf = ld(dy[i]);
    dx[i] = narrow<T>(gf * act_derivative_f(act, xf));
    const double xv = xf, r = xv > 0 ? xv : 0, g = gf;
    v[0] = g * r * r;
    v[1] = g;
  }
  __device__ void finish(int64_t, const double* s) const {
    if (dscale) dscale[0] += static_cast<float>(s[0]);
    if (dbias) dbias[0] += static_cast<float>(s[1]);
  }
};

// The same pass with 16-byte loads and each thread's sums in float (the chunk's kGroupChunk elements
// over 256 threads: 8 vectors a thread), added across the block in double: the functor version
// converted every element's products to double, which made this pass compute-bound. 16 bytes a
// thread: 4 floats (one group of four below) or 8 bf16 (two).
// dx = dy · 2·scale·relu(x), in float with the scale read once a thread: the same bits as
// act_derivative's double (2·scale is exact, and the product of two floats is exact in double, so
// either way one rounding to float), without its per-element switch, pointer test and double
// arithmetic (Nsight Compute, H100, 2026-12-05: this kernel's issue slots 62 % busy at 2.09 TB/s).
template <class T>
__global__ void star_relu_backward_vec_kernel(const T* x, Act act, const T* dy, T* dx, int64_t nv, int64_t chunks,
                                              double* partial) {
  constexpr int V = kVec<T>;
  __shared__ double scratch[32];
  const int64_t chunk = blockIdx.x, per = (nv + chunks - 1) / chunks;
  const int64_t i0 = chunk * per, i1 = i0 + per < nv ? i0 + per : nv;
  const float two_scale = 2.f * act_scale(act);
  float s0 = 0.f, s1 = 0.f;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    float v[V], g[V], d[V];
    load16(x + i * V, v);
    load16(dy + i * V, g);
#pragma unroll
    for (int j = 0; j < V; ++j) d[j] = g[j] * (v[j] > 0.f ? two_scale * v[j] : 0.f);
    store16(dx + i * V, d);
#pragma unroll
    for (int q = 0; q < V; q += 4) {
      const float rx = fmaxf(v[q], 0.f), ry = fmaxf(v[q + 1], 0.f), rz = fmaxf(v[q + 2], 0.f),
                  rw = fmaxf(v[q + 3], 0.f);
      s0 += g[q] * rx * rx + g[q + 1] * ry * ry + g[q + 2] * rz * rz + g[q + 3] * rw * rw;
      s1 += (g[q] + g[q + 1]) + (g[q + 2] + g[q + 3]);
    }
  }
  const double t0 = block_sum(static_cast<double>(s0), scratch);
  const double t1 = block_sum(static_cast<double>(s1), scratch);
  if (threadIdx.x == 0) {
    partial[chunk * 2 + 0] = t0;
    partial[chunk * 2 + 1] = t1;
  }
}

// ---- scaled residual -----------------------------------------------------------------------------
template <class T>
__global__ void scaled_residual_backward_kernel(const float* rs, const float* ls, const T* dy, T* dx, T* dbranch,
                                                int64_t total, int64_t C) {
  MF_GRID_STRIDE(i, total) {
    const int64_t c = i % C;
    const double g = ld(dy[i]);
    if (dx) dx[i] = narrow<T>(static_cast<float>(g * (rs ? rs[c] : 1.0)));
    dbranch[i] = narrow<T>(static_cast<float>(g * (ls ? ls[c] : 1.0)));
  }
}

// The scales' gradients, and dx and dbranch as scaled_residual_backward_kernel computes them, in the
// same pass over dy (each cell is visited once; all reads come before the writes, which may alias).
template <class T>
struct ScaleGrads {
  const T *x, *branch, *dy;
  float *d_rs, *d_ls;
  int64_t C;
  const float *rs, *ls;
  T *dx, *dbranch;
  __device__ void operator()(int64_t r, int64_t c, double* v) const {
    const int64_t at = r * C + c;
    const double g = ld(dy[at]);
    v[0] = d_rs ? g * ld(x[at]) : 0.0;  // each read only for its own gradient (x or branch may be null)
    v[1] = d_ls ? g * ld(branch[at]) : 0.0;
    if (dx) dx[at] = narrow<T>(static_cast<float>(g * (rs ? rs[c] : 1.0)));
    dbranch[at] = narrow<T>(static_cast<float>(g * (ls ? ls[c] : 1.0)));
  }
  __device__ void store(int64_t c, const double* s) const {
    if (d_rs) d_rs[c] += static_cast<float>(s[0]);
    if (d_ls) d_ls[c] += static_cast<float>(s[1]);
  }
  static constexpr int kV = kVec<T>;
  bool aligned() const {
    using kernels::aligned16;
    return aligned16(x) && aligned16(branch) && aligned16(dy) && aligned16(dx) && aligned16(dbranch);
  }
  // One row's loads, raw (METAFORMER_CUDA_COLSUM=batch issues several rows' before their stores), and
  // the columns' scales, read once.
  struct In {
    uint4 g, x, b;
  };
  struct Cols {
    float rs[kV], ls[kV];
  };
  __device__ void vec_cols(int64_t c0, Cols& k) const {
#pragma unroll
    for (int e = 0; e < kV; ++e) {
      k.rs[e] = rs ? rs[c0 + e] : 1.f;
      k.ls[e] = ls ? ls[c0 + e] : 1.f;
    }
  }
  __device__ void vec_load(int64_t r, int64_t c0, In& in) const {
    const int64_t at = r * C + c0;
    in.g = *reinterpret_cast<const uint4*>(dy + at);
    if (d_rs) in.x = *reinterpret_cast<const uint4*>(x + at);
    if (d_ls) in.b = *reinterpret_cast<const uint4*>(branch + at);
  }
  template <class A>
  __device__ void vec(int64_t r, int64_t c0, A (&v)[2][kV]) const {
    In in;
    Cols k;
    vec_cols(c0, k);
    vec_load(r, c0, in);
    vec_finish(r, c0, in, k, v);
  }
  // A = float: the products in float (one rounding each), dx and dbranch as before (their product
  // of two floats in double, rounded once: the same bits as a float product).
  template <class A>
  __device__ void vec_finish(int64_t r, int64_t c0, const In& in, const Cols& k, A (&v)[2][kV]) const {
    const int64_t at = r * C + c0;
    float g[kV], xs[kV], bs[kV], ox[kV], ob[kV];
    unpack16<T>(in.g, g);
    if (d_rs) unpack16<T>(in.x, xs);
    if (d_ls) unpack16<T>(in.b, bs);
#pragma unroll
    for (int e = 0; e < kV; ++e) {
      const A gd = g[e];
      if (d_rs) v[0][e] += gd * static_cast<A>(xs[e]);
      if (d_ls) v[1][e] += gd * static_cast<A>(bs[e]);
      ox[e] = g[e] * k.rs[e];
      ob[e] = g[e] * k.ls[e];
    }
    if (dx) store16(dx + at, ox);  // after every read: dx or dbranch may alias x, branch or dy
    store16(dbranch + at, ob);
  }
};

// ResMLP's Affine, y = x ⊙ alpha + beta: dalpha = Σ_rows dy ⊙ x, dbeta = Σ_rows dy.
struct AffineGrads {
  const float *x, *dy;
  float *dalpha, *dbeta;
  int64_t C;
  __device__ void operator()(int64_t r, int64_t c, double* v) const {
    const int64_t at = r * C + c;
    v[0] = static_cast<double>(dy[at]) * x[at];
    v[1] = dy[at];
  }
  __device__ void store(int64_t c, const double* s) const {
    if (dalpha) dalpha[c] += static_cast<float>(s[0]);
    if (dbeta) dbeta[c] += static_cast<float>(s[1]);
  }
};

__global__ void channel_scale_kernel(const float* dy, const float* alpha, float* dx, int64_t total, int64_t C) {
  MF_GRID_STRIDE(i, total) { dx[i] = static_cast<float>(static_cast<double>(dy[i]) * alpha[i % C]); }
}

// ---- small gathers -------------------------------------------------------------------------------
template <class T>
__global__ void global_avg_pool_backward_kernel(const T* dy, T* dx, int64_t total, int64_t HW, int64_t C) {
  MF_GRID_STRIDE(i, total) {
    const int64_t c = i % C, b = i / (HW * C);
    dx[i] = narrow<T>(static_cast<float>(ld(dy[b * C + c]) / static_cast<double>(HW)));
  }
}

// In bf16 the sum is rounded once, as fp32's is.
template <class T>
__global__ void channel_slice_backward_kernel(const T* dy, T* dx, int64_t total, int64_t C, int64_t offset,
                                              int64_t width) {
  MF_GRID_STRIDE(i, total) {
    const int64_t r = i / width, j = i % width;
    T& d = dx[r * C + offset + j];
    d = narrow<T>(ld(d) + ld(dy[i]));
  }
}

// The same, 16 bytes a thread (flat over rows × width / V, 32-bit indices: the launcher checks the
// sizes, widths, offset and pointers): the same float sums and roundings.
template <class T>
__global__ void channel_slice_backward_vec_kernel(const T* dy, T* dx, uint32_t total, uint32_t C, uint32_t offset,
                                                  uint32_t width) {
  constexpr uint32_t V = kVec<T>;
  const uint32_t wv = width / V;
  MF_GRID_STRIDE(i, total) {
    const uint32_t r = static_cast<uint32_t>(i) / wv, j = (static_cast<uint32_t>(i) - r * wv) * V;
    T* d = dx + size_t(r) * C + offset + j;
    float a[V], g[V];
    load16(d, a);
    load16(dy + size_t(r) * width + j, g);
#pragma unroll
    for (uint32_t e = 0; e < V; ++e) a[e] += g[e];
    store16(d, a);
  }
}

template <class T>
__global__ void pool_minus_input_backward_kernel(const T* dy, T* dx, int64_t total, int64_t H, int64_t W, int64_t C,
                                                 int kernel) {
  const int64_t pad = kernel / 2;
  MF_GRID_STRIDE(at, total) {
    const int64_t c = at % C, j = (at / C) % W, i = (at / (C * W)) % H, n = at / (C * W * H);
    double acc = -static_cast<double>(ld(dy[at]));
    // Outputs (h, w) whose window [h − pad, h − pad + k) contains (i, j).
    const int64_t hlo = i - (kernel - 1 - pad) > 0 ? i - (kernel - 1 - pad) : 0;
    const int64_t hhi = i + pad < H - 1 ? i + pad : H - 1;
    const int64_t wlo = j - (kernel - 1 - pad) > 0 ? j - (kernel - 1 - pad) : 0;
    const int64_t whi = j + pad < W - 1 ? j + pad : W - 1;
    for (int64_t h = hlo; h <= hhi; ++h)
      for (int64_t w = wlo; w <= whi; ++w) {
        const int64_t h0 = h - pad > 0 ? h - pad : 0, h1 = h - pad + kernel < H ? h - pad + kernel : H;
        const int64_t w0 = w - pad > 0 ? w - pad : 0, w1 = w - pad + kernel < W ? w - pad + kernel : W;
        acc += ld(dy[((n * H + h) * W + w) * C + c]) / static_cast<double>((h1 - h0) * (w1 - w0));
      }
    dx[at] = narrow<T>(static_cast<float>(acc));
  }
}

// The same sums with 32-bit indices, in float (at most k² terms, each a value times its window's
// 1 / count), V consecutive channels a thread (V = kVec: 16-byte loads, where C and the pointers
// allow). The 64-bit version's divisions, then double arithmetic, made this kernel 7-12 % of a
// poolformer_s12 training step's kernel time. K > 0 (k == K = 3, the default; POOL_TAPS=loop: K = 0):
// the K² neighbours' loads issued together from clamped addresses, then the same fmas in the same
// order as the loop's (so the same bits); the centre neighbour is dy itself.
template <class T, int V, int K = 0>
__global__ void pool_minus_input_backward_i32_kernel(const T* dy, T* dx, int total_vectors, int H, int W, int C,
                                                     int kernel) {
  if constexpr (K > 0) kernel = K;
  const int pad = kernel / 2, Cv = C / V;
  for (int at = blockIdx.x * blockDim.x + threadIdx.x; at < total_vectors; at += gridDim.x * blockDim.x) {
    const int cv = at % Cv, pix = at / Cv, j = pix % W, i = (pix / W) % H, n = pix / (W * H);
    float acc[V];
    if constexpr (K > 0) {
      static_assert(K % 2 == 1 && V == kVec<T>, "odd windows, 16-byte vectors");
      uint4 raw[K * K];
#pragma unroll
      for (int t = 0; t < K * K; ++t) {  // output (h, w) = (i − pad + t / K, j − pad + t % K), clamped
        const int h = min(max(i - pad + t / K, 0), H - 1), w = min(max(j - pad + t % K, 0), W - 1);
        raw[t] = *reinterpret_cast<const uint4*>(dy + static_cast<int64_t>(((n * H + h) * W + w) * Cv + cv) * V);
      }
      unpack16<T>(raw[K * K / 2], acc);
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] = -acc[e];
#pragma unroll
      for (int t = 0; t < K * K; ++t) {
        const int h = i - pad + t / K, w = j - pad + t % K;
        if (h < 0 || h >= H || w < 0 || w >= W) continue;
        const int rows = min(h - pad + K, H) - max(h - pad, 0), cols = min(w - pad + K, W) - max(w - pad, 0);
        const float inv = __frcp_rn(static_cast<float>(rows * cols));
        float vp[V];
        unpack16<T>(raw[t], vp);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] = fmaf(vp[e], inv, acc[e]);
      }
      store_v<T, V>(dx + static_cast<int64_t>(at) * V, acc);
      continue;
    }
    load_v<T, V>(dy + static_cast<int64_t>(at) * V, acc);
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = -acc[e];
    const int hlo = max(i - (kernel - 1 - pad), 0), hhi = min(i + pad, H - 1);
    const int wlo = max(j - (kernel - 1 - pad), 0), whi = min(j + pad, W - 1);
    for (int h = hlo; h <= hhi; ++h) {
      const int rows = min(h - pad + kernel, H) - max(h - pad, 0);
      for (int w = wlo; w <= whi; ++w) {
        const int cols = min(w - pad + kernel, W) - max(w - pad, 0);
        const float inv = __frcp_rn(static_cast<float>(rows * cols));
        float vp[V];
        load_v<T, V>(dy + static_cast<int64_t>(((n * H + h) * W + w) * Cv + cv) * V, vp);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] = fmaf(vp[e], inv, acc[e]);
      }
    }
    store_v<T, V>(dx + static_cast<int64_t>(at) * V, acc);
  }
}

// ---- attention through GEMMs: the softmax rows between them ----------------------------------------
// One warp per row r of S (raw q·k products) and dP (dy·v products), N values each: S becomes
// P = softmax(scale · S) and dP becomes scale · P ⊙ (dP − Σ_j P ⊙ dP), the gradient with respect to
// the raw products. Sums in double, in a fixed order (lane strides, then the warp's butterfly).
__global__ void attention_softmax_grad_kernel(float* S, float* dP, int64_t rows, int64_t N, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = warp; r < rows; r += warps) {
    float* s = S + r * N;
    float* g = dP + r * N;
    float mx = -INFINITY;
    for (int64_t j = lane; j < N; j += 32) mx = fmaxf(mx, s[j]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    double sum = 0;
    for (int64_t j = lane; j < N; j += 32) sum += exp(static_cast<double>(scale) * (s[j] - mx));
    sum = warp_sum(sum);
    const double inv = 1.0 / sum;
    double dot = 0;
    for (int64_t j = lane; j < N; j += 32) {
      const double p = exp(static_cast<double>(scale) * (s[j] - mx)) * inv;
      s[j] = static_cast<float>(p);
      dot += p * g[j];
    }
    dot = warp_sum(dot);
    for (int64_t j = lane; j < N; j += 32) g[j] = static_cast<float>(scale * s[j] * (g[j] - dot));
  }
}

// The same rows for bf16 training: P and dS written as bf16 into their own buffers (the products that
// read them take bf16 operands), S and dP read once more instead of rewritten in fp32 and cast. The
// exponentials in float (expf; at most 2⁻²⁴ relative, far below the bf16 rounding of the results),
// each lane's sums in float, the lanes added in double.
__global__ void attention_softmax_grad_bf16_kernel(const float* S, const float* dP, __nv_bfloat16* P,
                                                   __nv_bfloat16* dS, int64_t rows, int N, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = warp; r < rows; r += warps) {
    const float* s = S + r * N;
    const float* g = dP + r * N;
    float mx = -INFINITY;
    for (int j = lane; j < N; j += 32) mx = fmaxf(mx, s[j]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum_f = 0.f;
    for (int j = lane; j < N; j += 32) sum_f += expf(scale * (s[j] - mx));
    const float inv = static_cast<float>(1.0 / warp_sum(static_cast<double>(sum_f)));
    float dot_f = 0.f;
    for (int j = lane; j < N; j += 32) dot_f = fmaf(expf(scale * (s[j] - mx)) * inv, g[j], dot_f);
    const float dot = static_cast<float>(warp_sum(static_cast<double>(dot_f)));
    for (int j = lane; j < N; j += 32) {
      const float p = expf(scale * (s[j] - mx)) * inv;
      P[r * N + j] = __float2bfloat16_rn(p);
      dS[r * N + j] = __float2bfloat16_rn(scale * p * (g[j] - dot));
    }
  }
}

// ---- attention -----------------------------------------------------------------------------------
// qkv [batch, N, 3A], A = heads · d; P and dS [batch, heads, N, N] (double). One block per row
// (b, h, i) for the softmax and dS; one thread per element of dqkv for the products.
__global__ void attention_probs_kernel(const float* qkv, double* P, int64_t N, int heads, int d, float scale) {
  __shared__ double scratch[32];
  const int64_t A = static_cast<int64_t>(heads) * d;
  const int64_t row = blockIdx.x;  // (b · heads + h) · N + i
  const int64_t i = row % N, bh = row / N, h = bh % heads, b = bh / heads;
  const float* q = qkv + (b * N + i) * 3 * A + h * d;
  double* p = P + row * N;
  double mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
    const float* k = qkv + (b * N + j) * 3 * A + A + h * d;
    double s = 0;
    for (int c = 0; c < d; ++c) s += static_cast<double>(q[c]) * k[c];
    p[j] = s * scale;
    mx = fmax(mx, p[j]);
  }
  mx = block_max(mx, scratch);
  double sum = 0;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) sum += (p[j] = exp(p[j] - mx));
  sum = block_sum(sum, scratch);
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) p[j] /= sum;
}

__global__ void attention_ds_kernel(const float* qkv, const float* dy, const double* P, double* dS, int64_t N,
                                    int heads, int d) {
  __shared__ double scratch[32];
  const int64_t A = static_cast<int64_t>(heads) * d;
  const int64_t row = blockIdx.x;
  const int64_t i = row % N, bh = row / N, h = bh % heads, b = bh / heads;
  const float* go = dy + (b * N + i) * A + h * d;
  const double* p = P + row * N;
  double* ds = dS + row * N;
  double acc = 0;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
    const float* v = qkv + (b * N + j) * 3 * A + 2 * A + h * d;
    double s = 0;
    for (int c = 0; c < d; ++c) s += static_cast<double>(go[c]) * v[c];
    ds[j] = s;  // dP for now
    acc += s * p[j];
  }
  const double rowsum = block_sum(acc, scratch);
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) ds[j] = p[j] * (ds[j] - rowsum);
}

// dq_i = scale · Σ_j dS_ij k_j, dk_i = scale · Σ_j dS_ji q_j, dv_i = Σ_j P_ji dO_j.
__global__ void attention_dqkv_kernel(const float* qkv, const float* dy, const double* P, const double* dS,
                                      float* dqkv, int64_t total, int64_t N, int heads, int d, float scale) {
  const int64_t A = static_cast<int64_t>(heads) * d;
  MF_GRID_STRIDE(at, total) {  // at indexes dqkv [batch, N, 3, heads, d]
    const int64_t c = at % d, h = (at / d) % heads, part = (at / A) % 3, i = (at / (3 * A)) % N, b = at / (3 * A * N);
    const int64_t base = (b * heads + h) * N * N;
    double acc = 0;
    if (part == 0) {
      for (int64_t j = 0; j < N; ++j) acc += dS[base + i * N + j] * qkv[(b * N + j) * 3 * A + A + h * d + c];
      acc *= scale;
    } else if (part == 1) {
      for (int64_t j = 0; j < N; ++j) acc += dS[base + j * N + i] * qkv[(b * N + j) * 3 * A + h * d + c];
      acc *= scale;
    } else {
      for (int64_t j = 0; j < N; ++j) acc += P[base + j * N + i] * dy[(b * N + j) * A + h * d + c];
    }
    dqkv[at] = static_cast<float>(acc);
  }
}

// ---- cross-entropy -------------------------------------------------------------------------------
__global__ void cross_entropy_kernel(const float* logits, const float* target, float grad_scale, float* loss,
                                     float* dlogits, int64_t K) {
  __shared__ double scratch[32];
  const int64_t b = blockIdx.x;
  const float* l = logits + b * K;
  const float* t = target + b * K;
  double mx = -INFINITY;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) mx = fmax(mx, static_cast<double>(l[k]));
  mx = block_max(mx, scratch);
  double sum = 0;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) sum += exp(l[k] - mx);
  sum = block_sum(sum, scratch);
  const double lse = mx + log(sum);
  double value = 0;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    value -= t[k] * (l[k] - lse);
    dlogits[b * K + k] = static_cast<float>((exp(l[k] - lse) - t[k]) * grad_scale);
  }
  value = block_sum(value, scratch);
  if (threadIdx.x == 0) loss[b] = static_cast<float>(value);
}

}  // namespace

// ---- launchers -----------------------------------------------------------------------------------
namespace detail {
unsigned* column_finish_tickets(int64_t tiles, cudaStream_t s) {
  constexpr int64_t kTickets = 1 << 16;  // 256 KB; a tile is 32 columns
  static unsigned* const tickets = [s] {
    unsigned* t = nullptr;
    if (cudaMalloc(&t, kTickets * sizeof(unsigned)) == cudaSuccess &&
        cudaMemsetAsync(t, 0, kTickets * sizeof(unsigned), s) == cudaSuccess)
      return t;
    if (t) cudaFree(t);
    cudaGetLastError();  // the finish kernel runs instead: not an error of the launch that follows
    return static_cast<unsigned*>(nullptr);
  }();
  return tiles <= kTickets ? tickets : nullptr;
}
}  // namespace detail

int64_t column_sum_work(int64_t rows, int64_t cols) { return column_work(rows, cols, 1); }

cudaError_t column_sum_add(const float* dy, float* db, int64_t rows, int64_t cols, double* work, cudaStream_t s) {
  column_sums<1>(ColumnSum<float>{dy, db, cols}, rows, cols, work, s);
  return cudaGetLastError();
}
cudaError_t column_sum_add(const bf16* dy, float* db, int64_t rows, int64_t cols, double* work, cudaStream_t s) {
  column_sums<1>(ColumnSum<__nv_bfloat16>{dptr(dy), db, cols}, rows, cols, work, s);
  return cudaGetLastError();
}

int64_t token_bias_grad_work(int64_t B, int64_t M, int64_t C) { return group_work(M, B * C, 1); }

cudaError_t token_bias_grad_add(const float* dy, float* dbias, int64_t B, int64_t M, int64_t C, double* work,
                                cudaStream_t s) {
  if (B > 0 && C > 0) group_sums<1>(TokenBiasGrad{dy, dbias, M, C}, M, B * C, work, s);
  return cudaGetLastError();
}

int64_t norm_backward_work(int64_t groups, int64_t n, int64_t C) {
  const int64_t g = group_work(groups, n, 4), c = column_work(groups * n / C, C, 2);
  // The fused kernels' partials, where they run: three sums a chunk (with a res scale's).
  const int64_t f = n == C && norm_backward_fused() ? fused_norm_chunks(groups) * C * 3 : 0;
  const int64_t most = g > c ? g : c;
  // The one-pass GroupNorm candidate: the cells, then its column partials.
  const int64_t o = n != C && n % C == 0 && group_norm_backward_onepass()
                        ? groups * C * 4 + column_work(n / C, groups * C, 4)
                        : 0;
  const int64_t rest = most > f ? most : f;
  return groups * 4 + (rest > o ? rest : o);
}

bool norm_backward_fuses_res_scale(int64_t n, int64_t C) {
  return n == C && n <= 32 * kFusedNormMaxNpl && norm_backward_fused();
}

template <class H>
cudaError_t norm_backward(const H* xh, const float* w, const H* dyh, float eps, H* dxh, float* dw, float* db,
                          int64_t groups, int64_t n, int64_t C, double* work, cudaStream_t s, const H* resh,
                          const float* rs, float* d_rs) {
  if (groups <= 0 || n <= 0) return cudaGetLastError();
  if ((rs && (!resh || !norm_backward_fuses_res_scale(n, C))) || (d_rs && !rs)) return cudaErrorInvalidValue;
  using T = typename DevT<H>::type;
  const T *x = dptr(xh), *dy = dptr(dyh), *res = resh ? dptr(resh) : nullptr;
  T* dx = dptr(dxh);
  double* stats = work;
  double* partial = work + groups * 4;
  const int64_t total = groups * n;
  if (n == C && n <= 32 * kFusedNormMaxNpl && norm_backward_fused()) {
    const unsigned grid = static_cast<unsigned>(fused_norm_chunks(groups));
    const bool params = dw || db || d_rs;
    auto rows_kernels = [&](auto rs_tag) {
      constexpr bool RS = decltype(rs_tag)::value;
      if (norm_backward_choice() != 2 || !launch_norm_rows_backward_vec<T, RS>(x, w, dy, eps, res, rs, dx, params,
                                                                               groups, static_cast<int>(n), grid,
                                                                               partial, s))
        launch_norm_rows_backward_fused<T, RS>(x, w, dy, eps, res, rs, dx, params, groups, static_cast<int>(n), partial,
                                               s);
    };
    const dim3 finish_grid(blocks_for(C, kColTile)), finish_block(kColTile, kFinishLanes);
    if (rs) {
      rows_kernels(std::true_type{});
      if (params)
        column_finish_kernel<3><<<finish_grid, finish_block, 0, s>>>(NormSkipParamGrads{dw, db, d_rs}, C,
                                                                     fused_norm_chunks(groups), partial);
    } else {
      rows_kernels(std::false_type{});
      if (params)
        column_finish_kernel<2><<<finish_grid, finish_block, 0, s>>>(NormParamGrads<T>{x, dy, stats, dw, db, n, C}, C,
                                                                     fused_norm_chunks(groups), partial);
    }
    return cudaGetLastError();
  }
  // dx from the statistics, 16 bytes a thread where the sizes and addresses allow it.
  auto launch_dx = [&] {
    constexpr int64_t V = kVec<T>;
    using kernels::aligned16;
    if (n % V == 0 && C % V == 0 && total < (int64_t{1} << 31) && aligned16(x) && aligned16(dy) && aligned16(dx) &&
        (!res || aligned16(res)))
      norm_dx_vec_kernel<T><<<blocks_for(total / V), kThreads, 0, s>>>(x, w, dy, stats, res, dx,
                                                                     static_cast<uint32_t>(total / V),
                                                                     static_cast<uint32_t>(n), static_cast<uint32_t>(C));
    else
      norm_dx_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(x, w, dy, stats, res, dx, total, n, C);
  };
  if (n > kWarpRowMax && n != C && n % C == 0 && group_norm_backward_onepass()) {
    double* cells = partial;
    column_sums<4>(GnCellSums<T>{x, dy, cells, n, C}, n / C, groups * C, cells + groups * C * 4, s);
    gn_onepass_stats_kernel<<<static_cast<unsigned>(groups), kThreads, 0, s>>>(cells, w, stats, n, C, eps);
    launch_dx();
    if (dw || db)
      gn_onepass_params_kernel<<<blocks_for(C, kColTile), dim3(kColTile, kGnParamRows), 0, s>>>(cells, stats, dw, db,
                                                                                             groups, C);
    return cudaGetLastError();
  }
  if (n <= kWarpRowMax) {
    norm_rows_backward_kernel<T><<<blocks_for(groups * 32), kThreads, 0, s>>>(
        x, w, dy, eps, res, dx, stats, groups, static_cast<int>(n), static_cast<int>(C), 1.0 / static_cast<double>(n));
  } else {
    group_sums<4>(NormAllMoments<T>{x, w, dy, stats, n, C, eps}, groups, n, partial, s);
    launch_dx();
  }
  if (dw || db) column_sums<2>(NormParamGrads<T>{x, dy, stats, dw, db, n, C}, total / C, C, partial, s);
  return cudaGetLastError();
}
template cudaError_t norm_backward(const float*, const float*, const float*, float, float*, float*, float*, int64_t,
                                   int64_t, int64_t, double*, cudaStream_t, const float*, const float*, float*);
template cudaError_t norm_backward(const bf16*, const float*, const bf16*, float, bf16*, float*, float*, int64_t,
                                   int64_t, int64_t, double*, cudaStream_t, const bf16*, const float*, float*);

int64_t activation_backward_work(int64_t n) { return group_work(1, n, 2); }

template <class H>
cudaError_t activation_backward(const H* xh, Act act, const H* dyh, H* dxh, float* dscale, float* dbias, int64_t n,
                                double* work, cudaStream_t s) {
  if (n <= 0) return cudaGetLastError();
  using T = typename DevT<H>::type;
  constexpr int V = kVec<T>;
  const T *x = dptr(xh), *dy = dptr(dyh);
  T* dx = dptr(dxh);
  const bool vec = n % V == 0 && ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(dy) |
                                    reinterpret_cast<uintptr_t>(dx)) & 15) == 0;
  if ((dscale || dbias) && act.kind == 2) {  // dx in the scalars' pass
    const StarReluParams<T> f{x, dy, dscale, dbias, act, dx};
    if (!vec) {
      group_sums<2>(f, 1, n, work, s);
      return cudaGetLastError();
    }
    // ≤ the work group_sums<2>(…, 1, n) was sized for; the chunks cut the vectors, as before for floats
    const int64_t chunks = group_chunks(n * 4 / V);
    star_relu_backward_vec_kernel<T><<<static_cast<unsigned>(chunks), kThreads, 0, s>>>(x, act, dy, dx, n / V,
                                                                                         chunks, work);
    if (chunks >= 64)
      group_finish_wide_kernel<2><<<1, kThreads, 0, s>>>(f, 1, chunks, work);
    else
      group_finish_kernel<2><<<1, kThreads, 0, s>>>(f, 1, chunks, work);
    return cudaGetLastError();
  }
  if (vec)
    activation_backward_vec_kernel<T><<<blocks_for(n / V), kThreads, 0, s>>>(x, act, dy, dx, n / V);
  else
    activation_backward_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(x, act, dy, dx, n);
  return cudaGetLastError();
}
template cudaError_t activation_backward(const float*, Act, const float*, float*, float*, float*, int64_t, double*,
                                         cudaStream_t);
template cudaError_t activation_backward(const bf16*, Act, const bf16*, bf16*, float*, float*, int64_t, double*,
                                         cudaStream_t);

int64_t scaled_residual_backward_work(int64_t rows, int64_t C) { return column_work(rows, C, 2); }

template <class H>
cudaError_t scaled_residual_backward(const H* xh, const float* rs, const H* branchh, const float* ls, const H* dyh,
                                     H* dxh, H* dbranchh, float* d_rs, float* d_ls, int64_t rows, int64_t C,
                                     double* work, cudaStream_t s) {
  const int64_t total = rows * C;
  if (total <= 0) return cudaGetLastError();
  using T = typename DevT<H>::type;
  const T *x = dptr(xh), *branch = dptr(branchh), *dy = dptr(dyh);
  T *dx = dptr(dxh), *dbranch = dptr(dbranchh);
  if (d_rs || d_ls)
    column_sums<2>(ScaleGrads<T>{x, branch, dy, d_rs, d_ls, C, rs, ls, dx, dbranch}, rows, C, work, s);
  else
    scaled_residual_backward_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(rs, ls, dy, dx, dbranch, total, C);
  return cudaGetLastError();
}
template cudaError_t scaled_residual_backward(const float*, const float*, const float*, const float*, const float*,
                                              float*, float*, float*, float*, int64_t, int64_t, double*, cudaStream_t);
template cudaError_t scaled_residual_backward(const bf16*, const float*, const bf16*, const float*, const bf16*, bf16*,
                                              bf16*, float*, float*, int64_t, int64_t, double*, cudaStream_t);

int64_t complex_mul_weight_grad_work(int64_t rows, int64_t brows, int64_t C) {
  return column_work(rows / brows, brows * C, 2);
}

cudaError_t complex_mul_weight_grad(const float* a, const float* dy, float* db, int64_t rows, int64_t brows, int64_t C,
                                    double* work, cudaStream_t s) {
  if (rows <= 0 || brows <= 0 || C <= 0) return cudaGetLastError();
  column_sums<2>(ComplexWeightGrad{a, dy, db, brows, C}, rows / brows, brows * C, work, s);
  return cudaGetLastError();
}

int64_t channel_affine_backward_work(int64_t rows, int64_t C) { return column_work(rows, C, 2); }

cudaError_t channel_affine_backward(const float* x, const float* alpha, const float* dy, float* dx, float* dalpha,
                                    float* dbeta, int64_t rows, int64_t C, double* work, cudaStream_t s) {
  const int64_t total = rows * C;
  if (total <= 0) return cudaGetLastError();
  channel_scale_kernel<<<blocks_for(total), kThreads, 0, s>>>(dy, alpha, dx, total, C);
  if (dalpha || dbeta) column_sums<2>(AffineGrads{x, dy, dalpha, dbeta, C}, rows, C, work, s);
  return cudaGetLastError();
}

template <class H_>
cudaError_t global_avg_pool_backward(const H_* dy, H_* dx, int64_t B, int64_t HW, int64_t C, cudaStream_t s) {
  using T = typename DevT<H_>::type;
  const int64_t total = B * HW * C;
  if (total > 0)
    global_avg_pool_backward_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(dptr(dy), dptr(dx), total, HW, C);
  return cudaGetLastError();
}
template cudaError_t global_avg_pool_backward(const float*, float*, int64_t, int64_t, int64_t, cudaStream_t);
template cudaError_t global_avg_pool_backward(const bf16*, bf16*, int64_t, int64_t, int64_t, cudaStream_t);

template <class H_>
cudaError_t channel_slice_backward(const H_* dy, H_* dx, int64_t rows, int64_t C, int64_t offset, int64_t width,
                                   cudaStream_t s) {
  using T = typename DevT<H_>::type;
  const int64_t total = rows * width;
  constexpr int64_t V = kVec<T>;
  using kernels::aligned16;
  if (total > 0 && C % V == 0 && offset % V == 0 && width % V == 0 && rows * C < (int64_t{1} << 31) &&
      aligned16(dy) && aligned16(dx)) {
    channel_slice_backward_vec_kernel<T><<<blocks_for(total / V), kThreads, 0, s>>>(
        dptr(dy), dptr(dx), static_cast<uint32_t>(total / V), static_cast<uint32_t>(C), static_cast<uint32_t>(offset),
        static_cast<uint32_t>(width));
    return cudaGetLastError();
  }
  if (total > 0)
    channel_slice_backward_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(dptr(dy), dptr(dx), total, C, offset,
                                                                            width);
  return cudaGetLastError();
}
template cudaError_t channel_slice_backward(const float*, float*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
template cudaError_t channel_slice_backward(const bf16*, bf16*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);

template <class H_>
cudaError_t pool_minus_input_backward(const H_* dyh, H_* dxh, int64_t B, int64_t H, int64_t W, int64_t C, int kernel,
                                      cudaStream_t s) {
  using T = typename DevT<H_>::type;
  constexpr int V = kVec<T>;
  const T* dy = dptr(dyh);
  T* dx = dptr(dxh);
  const int64_t total = B * H * W * C;
  if (total > 0 && total < (int64_t{1} << 31)) {
    const bool vec = C % V == 0 && reinterpret_cast<uintptr_t>(dy) % 16 == 0 && reinterpret_cast<uintptr_t>(dx) % 16 == 0;
    const int64_t vectors = vec ? total / V : total;
    if (vec && kernels::pool_taps_unrolled(kernel))
      pool_minus_input_backward_i32_kernel<T, V, 3><<<blocks_for(vectors), kThreads, 0, s>>>(
          dy, dx, static_cast<int>(vectors), static_cast<int>(H), static_cast<int>(W), static_cast<int>(C), kernel);
    else if (vec)
      pool_minus_input_backward_i32_kernel<T, V><<<blocks_for(vectors), kThreads, 0, s>>>(
          dy, dx, static_cast<int>(vectors), static_cast<int>(H), static_cast<int>(W), static_cast<int>(C), kernel);
    else
      pool_minus_input_backward_i32_kernel<T, 1><<<blocks_for(vectors), kThreads, 0, s>>>(
          dy, dx, static_cast<int>(vectors), static_cast<int>(H), static_cast<int>(W), static_cast<int>(C), kernel);
  } else if (total > 0) {
    pool_minus_input_backward_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(dy, dx, total, H, W, C, kernel);
  }
  return cudaGetLastError();
}
template cudaError_t pool_minus_input_backward(const float*, float*, int64_t, int64_t, int64_t, int64_t, int,
                                               cudaStream_t);
template cudaError_t pool_minus_input_backward(const bf16*, bf16*, int64_t, int64_t, int64_t, int64_t, int,
                                               cudaStream_t);

cudaError_t attention_softmax_grad(float* S, float* dP, int64_t rows, int64_t N, float scale, cudaStream_t s) {
  if (rows > 0 && N > 0)
    attention_softmax_grad_kernel<<<blocks_for(rows * 32), kThreads, 0, s>>>(S, dP, rows, N, scale);
  return cudaGetLastError();
}

cudaError_t attention_softmax_grad(const float* S, const float* dP, bf16* P, bf16* dS, int64_t rows, int64_t N,
                                   float scale, cudaStream_t s) {
  if (N >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  if (rows > 0 && N > 0)
    attention_softmax_grad_bf16_kernel<<<blocks_for(rows * 32), kThreads, 0, s>>>(S, dP, dptr(P), dptr(dS), rows,
                                                                                  static_cast<int>(N), scale);
  return cudaGetLastError();
}

int64_t attention_backward_work(int64_t batch, int64_t N, int heads) { return 2 * batch * heads * N * N; }

cudaError_t attention_backward(const float* qkv, const float* dy, float* dqkv, int64_t batch, int64_t N, int heads,
                               int head_dim, float scale, double* work, cudaStream_t s) {
  const int64_t rows = batch * heads * N;
  if (rows <= 0 || head_dim <= 0) return cudaGetLastError();
  double* P = work;
  double* dS = work + rows * N;
  const int block = N >= 128 ? 128 : 32;
  attention_probs_kernel<<<static_cast<unsigned>(rows), block, 0, s>>>(qkv, P, N, heads, head_dim, scale);
  attention_ds_kernel<<<static_cast<unsigned>(rows), block, 0, s>>>(qkv, dy, P, dS, N, heads, head_dim);
  const int64_t total = batch * N * 3 * heads * head_dim;
  attention_dqkv_kernel<<<blocks_for(total), kThreads, 0, s>>>(qkv, dy, P, dS, dqkv, total, N, heads, head_dim, scale);
  return cudaGetLastError();
}

cudaError_t cross_entropy(const float* logits, const float* target, float grad_scale, float* loss, float* dlogits,
                          int64_t B, int64_t K, cudaStream_t s) {
  if (B > 0 && K > 0)
    cross_entropy_kernel<<<static_cast<unsigned>(B), K >= 256 ? 256 : 32, 0, s>>>(logits, target, grad_scale, loss,
                                                                                   dlogits, K);
  return cudaGetLastError();
}

}  // namespace mf::cuda::backward
