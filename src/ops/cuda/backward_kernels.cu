// Backward kernels of the CUDA backend: see backward_kernels.h. Simple by design: grid-stride loops
// with one thread per output element, and two reduction patterns, both in double and atomics-free:
//   - column sums (a parameter gradient per channel): a [rows, cols] view, blocks of 32 columns ×
//     8 row lanes summing one chunk of rows each into a partial, then one thread per column adding
//     the chunks' partials in order;
//   - group sums (norm statistics, StarReLU's two scalars): each group's n contiguous values cut into
//     chunks, one block per (group, chunk), then one thread per group adding the chunks in order.
// Short fixed sums that are no reductions over the batch (PoolFormer's pool − x backward, col2im:
// at most k² terms an element) are in float, like their forward kernels.
#include "ops/cuda/backward_kernels.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "ops/cuda/kernels/common.cuh"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace mf::cuda::backward {
namespace {

constexpr int kThreads = 256;

// Activations and their gradients are float, or bf16 on the bf16 backend (the public bf16 is an
// opaque 16-bit struct; kernels read CUDA's type): the kernel files' helpers (kernels/common.cuh).
// Arithmetic is fp32 or double either way.
template <class T> using DevT = kernels::Dev<T>;
template <class T> auto dptr(T* p) { return kernels::dev(p); }
using kernels::kVec;
__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(__nv_bfloat16 v) { return kernels::to_f(v); }
template <class T> __device__ __forceinline__ T narrow(float v) { return kernels::from_f<T>(v); }
template <class T>
__device__ __forceinline__ void load16(const T* p, float (&v)[kVec<T>]) { kernels::load_vec(p, v); }
template <class T>
__device__ __forceinline__ void store16(T* p, const float (&v)[kVec<T>]) { kernels::store_vec(p, v); }
// V = 1 (one element) or kVec<T> (16 bytes).
template <class T, int V>
__device__ __forceinline__ void load_v(const T* p, float (&v)[V]) {
  if constexpr (V == 1) v[0] = ld(*p);
  else load16(p, v);
}
template <class T, int V>
__device__ __forceinline__ void store_v(T* p, const float (&v)[V]) {
  if constexpr (V == 1) *p = narrow<T>(v[0]);
  else store16(p, v);
}

unsigned blocks_for(int64_t n, int block = kThreads) {
  int64_t g = (n + block - 1) / block;
  if (g < 1) g = 1;
  if (g > 65535LL * 16) g = 65535LL * 16;
  return static_cast<unsigned>(g);
}

#define MF_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__device__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ double warp_max(double v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Over the block (blockDim.x a multiple of 32); every thread gets the result; ends with a barrier,
// so `scratch` (32 doubles) can be reused at once.
__device__ double block_sum(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double t = lane < warps ? scratch[lane] : 0.0;
  t = warp_sum(t);
  __syncthreads();
  return t;
}
__device__ double block_max(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double t = lane < warps ? scratch[lane] : -INFINITY;
  t = warp_max(t);
  __syncthreads();
  return t;
}

// ---- activations, as the reference computes them (ops/ref/elementwise.cpp), in double ---------
constexpr double kSqrtHalf = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.3989422804014327;

// StarReLU's scalars, from the device when a GPU run keeps them there.
__device__ __forceinline__ float act_scale(const Act& a) { return a.scale_p ? *a.scale_p : a.scale; }
__device__ __forceinline__ float act_bias(const Act& a) { return a.bias_p ? *a.bias_p : a.bias; }

// apply_activation: the value rounded to float, as the reference's glu backward uses it.
__device__ float act_value(const Act& a, float x) {
  const double v = x;
  switch (a.kind) {
    case 0: return x;
    case 1: return static_cast<float>(0.5 * v * (1.0 + erf(v * kSqrtHalf)));
    case 2: {
      const double r = v > 0 ? v : 0;
      return static_cast<float>(act_scale(a) * r * r + act_bias(a));
    }
    case 3: {
      const double r = v > 0 ? v : 0;
      return static_cast<float>(r * r);
    }
    case 4: return x > 0 ? x : 0.f;
    case 5: return static_cast<float>(v / (1.0 + exp(-v)));
    case 6: {
      const float t = a.threshold;
      return x > t ? x - t : x < -t ? x + t : 0.f;
    }
  }
  return x;
}

// activation_derivative
__device__ double act_derivative(const Act& a, double x) {
  switch (a.kind) {
    case 0: return 1.0;
    case 1: {
      const double cdf = 0.5 * (1.0 + erf(x * kSqrtHalf));
      const double pdf = exp(-0.5 * x * x) * kInvSqrt2Pi;
      return cdf + x * pdf;
    }
    case 2: return x > 0 ? 2.0 * act_scale(a) * x : 0.0;
    case 3: return x > 0 ? 2.0 * x : 0.0;
    case 4: return x > 0 ? 1.0 : 0.0;
    case 5: {
      const double s = 1.0 / (1.0 + exp(-x));
      return s * (1.0 + x * (1.0 - s));
    }
    case 6: return fabs(x) > a.threshold ? 1.0 : 0.0;
  }
  return 1.0;
}

// ---- column sums: out[col] (+)= Σ_rows f(row, col), K sums at a time ----------------------------
constexpr int kColTile = 32, kRowLanes = 8;
constexpr int64_t kRowsPerChunk = 256, kMaxChunks = 1024;

int64_t column_chunks(int64_t rows) {
  int64_t c = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  return c < 1 ? 1 : c > kMaxChunks ? kMaxChunks : c;
}
int64_t column_work(int64_t rows, int64_t cols, int K) { return column_chunks(rows) * cols * K; }

// F: __device__ void operator()(int64_t row, int64_t col, double* v) const   (v[0..K) for one cell)
//    __device__ void store(int64_t col, const double* sums) const
template <int K, class F>
__global__ void column_partials_kernel(F f, int64_t rows, int64_t cols, int64_t chunks, double* partial) {
  __shared__ double sh[K][kRowLanes][kColTile];
  const int64_t col = blockIdx.x * static_cast<int64_t>(kColTile) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t per = (rows + chunks - 1) / chunks;
  const int64_t r0 = chunk * per, r1 = r0 + per < rows ? r0 + per : rows;
  double acc[K];
  for (int k = 0; k < K; ++k) acc[k] = 0;
  if (col < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      double v[K];
      f(r, col, v);
      for (int k = 0; k < K; ++k) acc[k] += v[k];
    }
  for (int k = 0; k < K; ++k) sh[k][threadIdx.y][threadIdx.x] = acc[k];
  __syncthreads();
  if (threadIdx.y == 0 && col < cols)
    for (int k = 0; k < K; ++k) {
      double s = 0;
      for (int y = 0; y < kRowLanes; ++y) s += sh[k][y][threadIdx.x];
      partial[(chunk * K + k) * cols + col] = s;
    }
}

// The chunks' partials of each column, in a fixed order: lane y of a 32 × 32 block adds chunks
// y, y + 32, … of column x, then lane 0 adds the 32 lane sums in order. (One thread per column adding
// up to 1,024 chunks alone was a serial tail: 0.25 ms per call on the H200 for 64 columns.)
constexpr int kFinishLanes = 32;
template <int K, class F>
__global__ void column_finish_kernel(F f, int64_t cols, int64_t chunks, const double* partial) {
  __shared__ double sh[K][kFinishLanes][kColTile + 1];
  for (int64_t tile = blockIdx.x; tile * kColTile < cols; tile += gridDim.x) {
    const int64_t col = tile * kColTile + threadIdx.x;
    double acc[K];
    for (int k = 0; k < K; ++k) acc[k] = 0;
    if (col < cols)
      for (int64_t c = threadIdx.y; c < chunks; c += kFinishLanes)
        for (int k = 0; k < K; ++k) acc[k] += partial[(c * K + k) * cols + col];
    for (int k = 0; k < K; ++k) sh[k][threadIdx.y][threadIdx.x] = acc[k];
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
      double s[K];
      for (int k = 0; k < K; ++k) {
        s[k] = 0;
        for (int y = 0; y < kFinishLanes; ++y) s[k] += sh[k][y][threadIdx.x];
      }
      f.store(col, s);
    }
    __syncthreads();
  }
}

template <int K, class F>
void column_sums(const F& f, int64_t rows, int64_t cols, double* work, cudaStream_t s) {
  if (cols <= 0) return;
  const int64_t chunks = column_chunks(rows);
  const dim3 grid(static_cast<unsigned>((cols + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
  column_partials_kernel<K><<<grid, dim3(kColTile, kRowLanes), 0, s>>>(f, rows, cols, chunks, work);
  column_finish_kernel<K><<<blocks_for(cols, kColTile), dim3(kColTile, kFinishLanes), 0, s>>>(f, cols, chunks, work);
}

// ---- group sums: per group g of n contiguous values, Σ_i f(g, i) ---------------------------------
constexpr int64_t kGroupChunk = 8192;

int64_t group_chunks(int64_t n) {
  int64_t c = (n + kGroupChunk - 1) / kGroupChunk;
  return c < 1 ? 1 : c > 65535 ? 65535 : c;
}
int64_t group_work(int64_t groups, int64_t n, int K) { return groups * group_chunks(n) * K; }

// F: __device__ void operator()(int64_t group, int64_t i, double* v) const
//    __device__ void finish(int64_t group, const double* sums) const
template <int K, class F>
__global__ void group_partials_kernel(F f, int64_t n, int64_t chunks, double* partial) {
  __shared__ double scratch[32];
  const int64_t g = blockIdx.x, chunk = blockIdx.y;
  const int64_t per = (n + chunks - 1) / chunks;
  const int64_t i0 = chunk * per, i1 = i0 + per < n ? i0 + per : n;
  double acc[K];
  for (int k = 0; k < K; ++k) acc[k] = 0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    double v[K];
    f(g, i, v);
    for (int k = 0; k < K; ++k) acc[k] += v[k];
  }
  for (int k = 0; k < K; ++k) {
    const double t = block_sum(acc[k], scratch);
    if (threadIdx.x == 0) partial[(g * chunks + chunk) * K + k] = t;
  }
}

template <int K, class F>
__global__ void group_finish_kernel(F f, int64_t groups, int64_t chunks, const double* partial) {
  MF_GRID_STRIDE(g, groups) {
    double s[K];
    for (int k = 0; k < K; ++k) s[k] = 0;
    for (int64_t c = 0; c < chunks; ++c)
      for (int k = 0; k < K; ++k) s[k] += partial[(g * chunks + c) * K + k];
    f.finish(g, s);
  }
}

// The same sums for groups of many chunks (StarReLU's two scalars over a whole activation: one
// group of up to 65,535 chunks): one block per group, its threads adding strided chunks, then a
// block sum — a fixed order still, without one thread adding every chunk alone.
template <int K, class F>
__global__ void group_finish_wide_kernel(F f, int64_t groups, int64_t chunks, const double* partial) {
  __shared__ double scratch[32];
  for (int64_t g = blockIdx.x; g < groups; g += gridDim.x) {
    double s[K];
    for (int k = 0; k < K; ++k) s[k] = 0;
    for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x)
      for (int k = 0; k < K; ++k) s[k] += partial[(g * chunks + c) * K + k];
    for (int k = 0; k < K; ++k) s[k] = block_sum(s[k], scratch);
    if (threadIdx.x == 0) f.finish(g, s);
  }
}

template <int K, class F>
void group_sums(const F& f, int64_t groups, int64_t n, double* work, cudaStream_t s) {
  if (groups <= 0) return;
  const int64_t chunks = group_chunks(n);
  // Narrow blocks for short groups (LayerNorm rows of 64 channels).
  const int64_t per = (n + chunks - 1) / chunks;
  const int block = per >= kThreads ? kThreads : per <= 32 ? 32 : static_cast<int>((per + 31) / 32 * 32);
  group_partials_kernel<K><<<dim3(static_cast<unsigned>(groups), static_cast<unsigned>(chunks)), block, 0, s>>>(
      f, n, chunks, work);
  if (chunks >= 64)
    group_finish_wide_kernel<K><<<blocks_for(groups, 1), kThreads, 0, s>>>(f, groups, chunks, work);
  else
    group_finish_kernel<K><<<blocks_for(groups), kThreads, 0, s>>>(f, groups, chunks, work);
}

// ---- bias gradient -------------------------------------------------------------------------------
template <class T>
struct ColumnSum {
  const T* dy;
  float* out;
  int64_t cols;
  __device__ void operator()(int64_t r, int64_t c, double* v) const { v[0] = ld(dy[r * cols + c]); }
  __device__ void store(int64_t c, const double* s) const { out[c] += static_cast<float>(s[0]); }
};

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

template <class T>
struct NormMoments {
  const T* x;
  double* stats;
  int64_t n;
  float eps;
  __device__ void operator()(int64_t g, int64_t i, double* v) const {
    const double xv = ld(x[g * n + i]);
    v[0] = xv;
    v[1] = xv * xv;  // exact in double
  }
  __device__ void finish(int64_t g, const double* s) const {
    norm_statistics(s[0], s[1], static_cast<double>(n), eps, stats[g * 4 + 0], stats[g * 4 + 1]);
  }
};

template <class T>
struct NormGradMoments {
  const T* x;
  const float* w;
  const T* dy;
  double* stats;
  int64_t n, C;
  __device__ void operator()(int64_t g, int64_t i, double* v) const {
    const int64_t at = g * n + i;
    const double xh = (ld(x[at]) - stats[g * 4 + 0]) * stats[g * 4 + 1];
    const double gg = static_cast<double>(ld(dy[at])) * w[i % C];
    v[0] = gg;
    v[1] = gg * xh;
  }
  __device__ void finish(int64_t g, const double* s) const {
    stats[g * 4 + 2] = s[0] / static_cast<double>(n);
    stats[g * 4 + 3] = s[1] / static_cast<double>(n);
  }
};

template <class T>
__global__ void norm_dx_kernel(const T* x, const float* w, const T* dy, const double* stats, T* dx, int64_t total,
                               int64_t n, int64_t C) {
  MF_GRID_STRIDE(at, total) {
    const int64_t g = at / n, i = at % n;
    const double* st = stats + g * 4;
    const double xh = (ld(x[at]) - st[0]) * st[1];
    const double gg = static_cast<double>(ld(dy[at])) * w[i % C];
    dx[at] = narrow<T>(norm_dx_value(st[1], gg, xh, st[2], st[3]));
  }
}

// LayerNorm's backward for short rows (n ≤ kWarpRowMax): one warp per row does what NormMoments,
// NormGradMoments and norm_dx_kernel do in three launches with a block per row — the statistics, the
// two sums of dx's formula and dx — and leaves the four statistics (double) for the parameter
// gradients' column sums. Each lane sums its elements in float (at most 64); the lanes' sums are
// added in double (the butterfly: a fixed order). The variance is two-pass (Σ (x − mean)², no
// cancellation), rstd a float rsqrt refined by one Newton step in double, and 1 / n a multiply.
// (With every element and every row scalar in double — a division, a square root and the
// conversions, which all 32 lanes execute — this kernel ran at a quarter of memory speed on rows of
// 64 channels: 7 % of convformer_s18's training kernel time.)
constexpr int64_t kWarpRowMax = 2048;
template <class T>
__global__ void norm_rows_backward_kernel(const T* x, const float* w, const T* dy, float eps, T* dx, double* stats,
                                          int64_t rows, int n, int C, double inv_n) {
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
    // Σ (x − meanf)² = Σ (x − mean)² + n (mean − meanf)²: the second term taken off in double.
    const double dm = mean - static_cast<double>(meanf);
    double var = warp_sum(static_cast<double>(q)) * inv_n - dm * dm;
    if (var < 0) var = 0;
    const double v = var + static_cast<double>(eps);
    double rstd = rsqrtf(static_cast<float>(v));
    rstd = rstd * (1.5 - 0.5 * v * rstd * rstd);
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
      dx[r * n + i] = narrow<T>(rstdf * (gg - m0 - xh * m1));
    }
    if (lane == 0) {
      stats[r * 4 + 0] = mean;
      stats[r * 4 + 1] = rstd;
      stats[r * 4 + 2] = t0;
      stats[r * 4 + 3] = t1;
    }
  }
}

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
};

// ---- activation ----------------------------------------------------------------------------------
template <class T>
__global__ void activation_backward_kernel(const T* x, Act act, const T* dy, T* dx, int64_t n) {
  MF_GRID_STRIDE(i, n)
  dx[i] = narrow<T>(static_cast<float>(static_cast<double>(ld(dy[i])) * act_derivative(act, ld(x[i]))));
}

// GELU's and SiLU's derivatives in float (erff, expf: a few ulp) — in double they made the
// activation backward compute-bound (10 % of a poolformer_s12 training step's kernel time); the rest
// as above. The product with dy is one float rounding, as before.
__device__ float act_derivative_f(const Act& a, float x) {
  switch (a.kind) {
    case 1: {
      const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
      const float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
      return cdf + x * pdf;
    }
    case 5: {
      const float s = 1.f / (1.f + expf(-x));
      return s * (1.f + x * (1.f - s));
    }
    default: return static_cast<float>(act_derivative(a, x));
  }
}
// The activation's value, GELU and SiLU in float likewise (for glu's backward).
__device__ float act_value_f(const Act& a, float x) {
  switch (a.kind) {
    case 1: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case 5: return x / (1.f + expf(-x));
    default: return act_value(a, x);
  }
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
template <class T>
__global__ void star_relu_backward_vec_kernel(const T* x, Act act, const T* dy, T* dx, int64_t nv, int64_t chunks,
                                              double* partial) {
  constexpr int V = kVec<T>;
  __shared__ double scratch[32];
  const int64_t chunk = blockIdx.x, per = (nv + chunks - 1) / chunks;
  const int64_t i0 = chunk * per, i1 = i0 + per < nv ? i0 + per : nv;
  float s0 = 0.f, s1 = 0.f;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    float v[V], g[V];
    activation_dx_vector(x, act, dy, dx, i, v, g);
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
    dx[i] = narrow<T>(static_cast<float>(g * (rs ? rs[c] : 1.0)));
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
    v[0] = g * ld(x[at]);
    v[1] = g * ld(branch[at]);
    dx[at] = narrow<T>(static_cast<float>(g * (rs ? rs[c] : 1.0)));
    dbranch[at] = narrow<T>(static_cast<float>(g * (ls ? ls[c] : 1.0)));
  }
  __device__ void store(int64_t c, const double* s) const {
    if (d_rs) d_rs[c] += static_cast<float>(s[0]);
    if (d_ls) d_ls[c] += static_cast<float>(s[1]);
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

// One thread per element of t: its gradient as the gate of output j = k − gate_offset and as the
// value of output j = k − value_offset (the windows may overlap; no two threads write one element).
// Float arithmetic (GELU's and SiLU's erff and expf) and 32-bit indices (the launcher checks the
// sizes): the double version was a fifth of MambaOut-Femto's training kernel time.
template <class T>
__global__ void glu_dt_kernel(const T* t, int Ct, const T* c, int cw, int gate_offset, int value_offset, Act act,
                              const T* dy, int width, T* dt, int total) {
  const int from_t = width - cw;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int r = i / Ct, k = i - r * Ct;
    const T* tr = t + static_cast<int64_t>(r) * Ct;
    const T* dyr = dy + static_cast<int64_t>(r) * width;
    float acc = 0.f;
    const int jg = k - gate_offset;
    if (jg >= 0 && jg < width) {
      const float v = ld(jg < from_t ? tr[value_offset + jg] : c[static_cast<int64_t>(r) * cw + jg - from_t]);
      acc += ld(dyr[jg]) * v * act_derivative_f(act, ld(tr[k]));
    }
    const int jv = k - value_offset;
    if (jv >= 0 && jv < from_t) acc += ld(dyr[jv]) * act_value_f(act, ld(tr[gate_offset + jv]));
    dt[i] = narrow<T>(acc);
  }
}

template <class T>
__global__ void glu_dc_kernel(const T* t, int Ct, int cw, int gate_offset, Act act, const T* dy, int width, T* dc,
                              int total) {
  const int from_t = width - cw;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int r = i / cw, j = from_t + (i - r * cw);
    const float g = act_value_f(act, ld(t[static_cast<int64_t>(r) * Ct + gate_offset + j]));
    dc[i] = narrow<T>(ld(dy[static_cast<int64_t>(r) * width + j]) * g);
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
// 1 / count), V consecutive channels a thread (V = 4: 16-byte loads, where C and the pointers allow).
// The 64-bit version's divisions, then double arithmetic, made this kernel 7-12 % of a poolformer_s12
// training step's kernel time.
template <class T, int V>
__global__ void pool_minus_input_backward_i32_kernel(const T* dy, T* dx, int total_vectors, int H, int W, int C,
                                                     int kernel) {
  const int pad = kernel / 2, Cv = C / V;
  for (int at = blockIdx.x * blockDim.x + threadIdx.x; at < total_vectors; at += gridDim.x * blockDim.x) {
    const int cv = at % Cv, pix = at / Cv, j = pix % W, i = (pix / W) % H, n = pix / (W * H);
    float acc[V];
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

// ---- depthwise convolution -----------------------------------------------------------------------
// dx of input pixel (n, ih, iw, c): the taps (ki, kj) whose output (ih + ph − ki) / sh,
// (iw + pw − kj) / sw is a whole number inside the output.
template <class T>
__global__ void depthwise_dx_kernel(const float* w, const T* dy, T* dx, int64_t total, int64_t H, int64_t W, int64_t C,
                                    int64_t Ho, int64_t Wo, int kh, int kw, int sh, int sw, int ph, int pw) {
  MF_GRID_STRIDE(at, total) {
    const int64_t c = at % C, iw = (at / C) % W, ih = (at / (C * W)) % H, n = at / (C * W * H);
    double acc = 0;
    for (int ki = 0; ki < kh; ++ki) {
      const int64_t th = ih + ph - ki;
      if (th < 0 || th % sh) continue;
      const int64_t oh = th / sh;
      if (oh >= Ho) continue;
      for (int kj = 0; kj < kw; ++kj) {
        const int64_t tw = iw + pw - kj;
        if (tw < 0 || tw % sw) continue;
        const int64_t ow = tw / sw;
        if (ow >= Wo) continue;
        acc += static_cast<double>(ld(dy[((n * Ho + oh) * Wo + ow) * C + c])) * w[(c * kh + ki) * kw + kj];
      }
    }
    dx[at] = narrow<T>(static_cast<float>(acc));
  }
}

// dw as a column sum: column (tap, c) = tap · C + c over the rows (n, oh, ow) of dy.
template <class T>
struct DepthwiseWeightGrad {
  const T *x, *dy;
  float* dw;
  int64_t H, W, C, Ho, Wo;
  int kh, kw, sh, sw, ph, pw;
  __device__ void operator()(int64_t r, int64_t col, double* v) const {
    const int64_t tap = col / C, c = col % C;
    const int ki = static_cast<int>(tap / kw), kj = static_cast<int>(tap % kw);
    const int64_t ow = r % Wo, oh = (r / Wo) % Ho, n = r / (Wo * Ho);
    const int64_t ih = oh * sh - ph + ki, iw = ow * sw - pw + kj;
    v[0] = ih < 0 || ih >= H || iw < 0 || iw >= W
               ? 0.0
               : static_cast<double>(ld(dy[r * C + c])) * ld(x[((n * H + ih) * W + iw) * C + c]);
  }
  __device__ void store(int64_t col, const double* s) const {
    const int64_t tap = col / C, c = col % C;
    dw[c * kh * kw + tap] += static_cast<float>(s[0]);
  }
};

// The common kernel sizes (3, 5, 7) with the taps known at compile time and 32-bit index arithmetic
// (the generic kernels above spend most of their time in 64-bit divisions): the first kernels the
// training profile asked for. Same sums in the same kind of order, so as deterministic.
struct DwShape {
  int H, W, C, Ho, Wo, sh, sw, ph, pw;
};

// dx: one thread per input element, the taps that read it, in double.
template <int KH, int KW, class T>
__global__ void depthwise_dx_fixed_kernel(const float* w, const T* dy, T* dx, int total, DwShape d) {
  for (int at = blockIdx.x * blockDim.x + threadIdx.x; at < total; at += gridDim.x * blockDim.x) {
    const int c = at % d.C, iw = (at / d.C) % d.W, rest = at / (d.C * d.W), ih = rest % d.H, n = rest / d.H;
    double acc = 0;
#pragma unroll
    for (int ki = 0; ki < KH; ++ki) {
      const int th = ih + d.ph - ki;
      if (th < 0 || th % d.sh) continue;
      const int oh = th / d.sh;
      if (oh >= d.Ho) continue;
#pragma unroll
      for (int kj = 0; kj < KW; ++kj) {
        const int tw = iw + d.pw - kj;
        if (tw < 0 || tw % d.sw) continue;
        const int ow = tw / d.sw;
        if (ow >= d.Wo) continue;
        acc += static_cast<double>(ld(dy[((n * d.Ho + oh) * d.Wo + ow) * d.C + c])) * w[(c * KH + ki) * KW + kj];
      }
    }
    dx[at] = narrow<T>(static_cast<float>(acc));
  }
}

// The end of both dW partial kernels below: each thread's TAPS sums for channel c, added over the
// block's kRowLanes lanes in order, tap by tap, into partial[(chunk · TAPS + tap) · C + c].
template <int TAPS, class Acc>
__device__ __forceinline__ void store_tap_partials(const Acc* acc, int c, int chunk, int C, double* partial) {
  __shared__ double sh[kRowLanes][kColTile];
#pragma unroll
  for (int t = 0; t < TAPS; ++t) {
    sh[threadIdx.y][threadIdx.x] = acc[t];
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
      double s = 0;
      for (int y = 0; y < kRowLanes; ++y) s += sh[y][threadIdx.x];
      partial[(static_cast<int64_t>(chunk) * TAPS + t) * C + c] = s;
    }
    __syncthreads();
  }
}

// dw partials: block (32 channels, kRowLanes lanes), blockIdx.y a chunk of output rows. Each thread
// keeps all KH·KW taps' sums for its channel in registers (dy read once per row, not once per tap),
// then the lanes are added in order, tap by tap, into partial[(chunk · taps + tap) · C + c].
template <int KH, int KW, class T>
__global__ void depthwise_dw_fixed_kernel(const T* x, const T* dy, int rows, int chunks, DwShape d, double* partial) {
  const int c = blockIdx.x * kColTile + threadIdx.x, chunk = blockIdx.y;
  const int per = (rows + chunks - 1) / chunks, r0 = chunk * per, r1 = r0 + per < rows ? r0 + per : rows;
  double acc[KH * KW];
#pragma unroll
  for (int t = 0; t < KH * KW; ++t) acc[t] = 0;
  if (c < d.C)
    for (int r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      const int ow = r % d.Wo, oh = (r / d.Wo) % d.Ho, n = r / (d.Wo * d.Ho);
      const double g = ld(dy[r * d.C + c]);
      const int ih0 = oh * d.sh - d.ph, iw0 = ow * d.sw - d.pw;
#pragma unroll
      for (int ki = 0; ki < KH; ++ki) {
        const int ih = ih0 + ki;
        if (ih < 0 || ih >= d.H) continue;
        const T* xr = x + ((n * d.H + ih) * d.W) * d.C + c;
#pragma unroll
        for (int kj = 0; kj < KW; ++kj) {
          const int iw = iw0 + kj;
          if (iw >= 0 && iw < d.W) acc[ki * KW + kj] += g * ld(xr[iw * d.C]);
        }
      }
    }
  store_tap_partials<KH * KW>(acc, c, chunk, d.C, partial);
}

// One image row (n, oh) of dy's products for channel c, added into the thread's KH·KW tap sums. x
// points at image n's channel c, g_row at the row's channel c. The sliding window: for each kernel
// row ki the thread slides a window of KW input values along the row, one new x and one dy per
// output pixel.
struct SlidingRow {
  template <int KH, int KW, class T>
  __device__ __forceinline__ static void add(float (&acc)[KH * KW], const T* x_img, const T* g_row, int oh,
                                             const DwShape& d) {
#pragma unroll
    for (int ki = 0; ki < KH; ++ki) {
      const int ih = oh * d.sh - d.ph + ki;
      if (ih < 0 || ih >= d.H) continue;
      const T* xr = x_img + ih * d.W * d.C;
      // win[kj] holds x at iw = ow − pw + kj; start with the window of ow = −1 (win[0] unused).
      float win[KW];
      win[0] = 0.f;
#pragma unroll
      for (int kj = 1; kj < KW; ++kj) {
        const int iw = kj - 1 - d.pw;
        win[kj] = iw >= 0 && iw < d.W ? ld(xr[iw * d.C]) : 0.f;
      }
      for (int ow = 0; ow < d.Wo; ++ow) {
#pragma unroll
        for (int kj = 0; kj + 1 < KW; ++kj) win[kj] = win[kj + 1];
        const int iw = ow + KW - 1 - d.pw;
        win[KW - 1] = iw >= 0 && iw < d.W ? ld(xr[iw * d.C]) : 0.f;
        const float g = ld(g_row[ow * d.C]);
#pragma unroll
        for (int kj = 0; kj < KW; ++kj) acc[ki * KW + kj] = fmaf(g, win[kj], acc[ki * KW + kj]);
      }
    }
  }
};

// The same row walked in blocks of OB outputs, every loop unrolled: per kernel row, the OB + KW − 1
// input values of the block are loaded into registers and all OB · KW products taken from there,
// and dy is loaded once per block instead of once per kernel row. SlidingRow shifts its window by
// KW − 1 register moves per output and kernel row, about as many instructions as its FMAs. Each tap's terms are added in the same order (rows, then ascending ow), with zero
// products for the positions past the row's end, so the sums are the same. A candidate, chosen with
// METAFORMER_CUDA_DW_DW=blocked until the device A/B has measured it (tools/device/cuda_check.sh
// dwdwab).
struct BlockedRow {
  static constexpr int OB = 8;
  template <int KH, int KW, class T>
  __device__ __forceinline__ static void add(float (&acc)[KH * KW], const T* x_img, const T* g_row, int oh,
                                             const DwShape& d) {
    for (int ow0 = 0; ow0 < d.Wo; ow0 += OB) {
      float g[OB];
#pragma unroll
      for (int o = 0; o < OB; ++o) g[o] = ow0 + o < d.Wo ? ld(g_row[(ow0 + o) * d.C]) : 0.f;
      const int iw0 = ow0 - d.pw;  // the block's first input column (stride 1)
      const bool interior = iw0 >= 0 && iw0 + OB + KW - 1 <= d.W;
#pragma unroll
      for (int ki = 0; ki < KH; ++ki) {
        const int ih = oh * d.sh - d.ph + ki;
        if (ih < 0 || ih >= d.H) continue;
        const T* xr = x_img + ih * d.W * d.C;
        float win[OB + KW - 1];
        if (interior) {
#pragma unroll
          for (int j = 0; j < OB + KW - 1; ++j) win[j] = ld(xr[(iw0 + j) * d.C]);
        } else {
#pragma unroll
          for (int j = 0; j < OB + KW - 1; ++j) {
            const int iw = iw0 + j;
            win[j] = iw >= 0 && iw < d.W ? ld(xr[iw * d.C]) : 0.f;
          }
        }
#pragma unroll
        for (int o = 0; o < OB; ++o)
#pragma unroll
          for (int kj = 0; kj < KW; ++kj) acc[ki * KW + kj] = fmaf(g[o], win[o + kj], acc[ki * KW + kj]);
      }
    }
  }
};

// dw partials at horizontal stride 1, one image row (n, oh) of dy at a time (Row: SlidingRow or
// BlockedRow): block (32 channels, kRowLanes lanes), blockIdx.y a chunk of image rows split over the
// lanes, then the lanes added in order, as above. (The kernel above read x 49 times per output for
// 7×7, a quarter of a convformer_s18 training step's kernel time on the H200.) Each thread sums in
// float (two image rows: about a hundred products a tap at 56 wide, so float's rounding stays near
// 1e-6), the lanes and chunks in double: float · float products widened to double cost a conversion
// each, and on the H200 those conversions, not the loads, bounded the kernel (0.9 ms a launch).
template <int KH, int KW, class T, class Row>
__global__ void depthwise_dw_rows_kernel(const T* x, const T* dy, int img_rows, int chunks, DwShape d,
                                         double* partial) {
  const int c = blockIdx.x * kColTile + threadIdx.x, chunk = blockIdx.y;
  const int per = (img_rows + chunks - 1) / chunks, r0 = chunk * per, r1 = r0 + per < img_rows ? r0 + per : img_rows;
  float acc[KH * KW];
#pragma unroll
  for (int t = 0; t < KH * KW; ++t) acc[t] = 0;
  if (c < d.C)
    for (int r = r0 + threadIdx.y; r < r1; r += kRowLanes) {  // r = n · Ho + oh
      const int oh = r % d.Ho, n = r / d.Ho;
      Row::template add<KH, KW>(acc, x + n * d.H * d.W * d.C + c, dy + r * d.Wo * d.C + c, oh, d);
    }
  store_tap_partials<KH * KW>(acc, c, chunk, d.C, partial);
}

// Which dW kernel at stride 1: the sliding window (the default), or the blocked candidate
// (METAFORMER_CUDA_DW_DW=blocked).
bool dw_weight_grad_blocked() {
  static const bool blocked = [] {
    const char* e = std::getenv("METAFORMER_CUDA_DW_DW");
    return e != nullptr && std::strcmp(e, "blocked") == 0;
  }();
  return blocked;
}

// dw[c, tap] += Σ over the chunks, in order.
__global__ void depthwise_dw_finish_kernel(const double* partial, float* dw, int chunks, int taps, int C) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < taps * C; i += gridDim.x * blockDim.x) {
    const int tap = i / C, c = i % C;
    double s = 0;
    for (int k = 0; k < chunks; ++k) s += partial[(static_cast<int64_t>(k) * taps + tap) * C + c];
    dw[c * taps + tap] += static_cast<float>(s);
  }
}

template <int KH, int KW, class T>
void depthwise_backward_fixed(const T* x, const float* w, const T* dy, T* dx, float* dw, int B, DwShape d,
                              double* work, cudaStream_t s) {
  const int total = B * d.H * d.W * d.C;
  if (dx && total > 0)
    depthwise_dx_fixed_kernel<KH, KW, T><<<blocks_for(total), kThreads, 0, s>>>(w, dy, dx, total, d);
  const int rows = B * d.Ho * d.Wo;
  if (dw && rows > 0) {
    int chunks = static_cast<int>(column_chunks(rows));  // the most the workspace holds
    const dim3 block(kColTile, kRowLanes);
    if (d.sw == 1) {  // 16 image rows a chunk, 2 a lane
      const int img_rows = B * d.Ho, want = (img_rows + 15) / 16;
      chunks = want < chunks ? want : chunks;
      // (Two bf16 channels a thread with 4-byte loads was tried on the H200 and was slower: 24.5
      // against 19.0 ms in two convformer_s18 steps, with twice the accumulators; docs/cuda.md.)
      const dim3 grid(static_cast<unsigned>((d.C + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
      if (dw_weight_grad_blocked())
        depthwise_dw_rows_kernel<KH, KW, T, BlockedRow><<<grid, block, 0, s>>>(x, dy, img_rows, chunks, d, work);
      else
        depthwise_dw_rows_kernel<KH, KW, T, SlidingRow><<<grid, block, 0, s>>>(x, dy, img_rows, chunks, d, work);
    } else {
      const dim3 grid(static_cast<unsigned>((d.C + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
      depthwise_dw_fixed_kernel<KH, KW, T><<<grid, block, 0, s>>>(x, dy, rows, chunks, d, work);
    }
    depthwise_dw_finish_kernel<<<blocks_for(static_cast<int64_t>(KH) * KW * d.C), kThreads, 0, s>>>(work, dw, chunks,
                                                                                                  KH * KW, d.C);
  }
}

// w [C, 1, kh, kw] -> flipped [kh, kw, C]: flipped[ki][kj][c] = w[c][kh − 1 − ki][kw − 1 − kj].
__global__ void depthwise_weight_flip_hwc_kernel(const float* w, float* flipped, int64_t total, int64_t C, int kh,
                                                 int kw) {
  MF_GRID_STRIDE(i, total) {  // i indexes flipped
    const int64_t c = i % C, tap = i / C;
    const int ki = static_cast<int>(tap / kw), kj = static_cast<int>(tap % kw);
    flipped[i] = w[(c * kh + (kh - 1 - ki)) * kw + (kw - 1 - kj)];
  }
}

// ---- dense convolution helpers -------------------------------------------------------------------
__global__ void conv_weight_grad_add_kernel(const float* dwk, float* dw, int64_t total, int64_t Ci, int kh, int kw) {
  MF_GRID_STRIDE(i, total) {
    const int64_t kx = i % kw, ky = (i / kw) % kh, ci = (i / (kw * kh)) % Ci, co = i / (kw * kh * Ci);
    dw[i] += dwk[((co * kh + ky) * kw + kx) * Ci + ci];
  }
}

template <class T>
__global__ void col2im_kernel(const T* dcols, T* dx, int64_t total, int64_t H, int64_t W, int64_t C, int kh, int kw,
                              int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo) {
  const int64_t K = static_cast<int64_t>(kh) * kw * C;
  MF_GRID_STRIDE(at, total) {
    const int64_t c = at % C, iw = (at / C) % W, ih = (at / (C * W)) % H, n = at / (C * W * H);
    double acc = 0;
    for (int ky = 0; ky < kh; ++ky) {
      const int64_t th = ih + ph - ky;
      if (th < 0 || th % sh) continue;
      const int64_t oh = th / sh;
      if (oh >= Ho) continue;
      for (int kx = 0; kx < kw; ++kx) {
        const int64_t tw = iw + pw - kx;
        if (tw < 0 || tw % sw) continue;
        const int64_t ow = tw / sw;
        if (ow >= Wo) continue;
        acc += ld(dcols[((n * Ho + oh) * Wo + ow) * K + (static_cast<int64_t>(ky) * kw + kx) * C + c]);
      }
    }
    dx[at] = narrow<T>(static_cast<float>(acc));
  }
}

// The same with 32-bit indices, float sums (at most ⌈kh/sh⌉·⌈kw/sw⌉ terms: 4 for the downsampling
// convolutions) and V = 4 channels a thread where C allows: the 64-bit version's divisions and double
// sums made it 2-4 % of a training step's kernel time.
template <class T, int V>
__global__ void col2im_i32_kernel(const T* dcols, T* dx, int total_vectors, int H, int W, int C, int kh, int kw, int sh,
                                  int sw, int ph, int pw, int Ho, int Wo) {
  const int K = kh * kw * C, Cv = C / V;
  for (int at = blockIdx.x * blockDim.x + threadIdx.x; at < total_vectors; at += gridDim.x * blockDim.x) {
    const int cv = at % Cv, pix = at / Cv, iw = pix % W, ih = (pix / W) % H, n = pix / (W * H);
    float acc[V] = {};
    for (int ky = 0; ky < kh; ++ky) {
      const int th = ih + ph - ky;
      if (th < 0 || th % sh) continue;
      const int oh = th / sh;
      if (oh >= Ho) continue;
      for (int kx = 0; kx < kw; ++kx) {
        const int tw = iw + pw - kx;
        if (tw < 0 || tw % sw) continue;
        const int ow = tw / sw;
        if (ow >= Wo) continue;
        // dcols row (n, oh, ow), column (ky, kx, c): K is a multiple of V when C is.
        float v[V];
        load_v<T, V>(dcols + static_cast<int64_t>((n * Ho + oh) * Wo + ow) * K + (ky * kw + kx) * C + cv * V, v);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] += v[e];
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
  const int64_t g = group_work(groups, n, 2), c = column_work(groups * n / C, C, 2);
  return groups * 4 + (g > c ? g : c);
}

template <class H>
cudaError_t norm_backward(const H* xh, const float* w, const H* dyh, float eps, H* dxh, float* dw, float* db,
                          int64_t groups, int64_t n, int64_t C, double* work, cudaStream_t s) {
  if (groups <= 0 || n <= 0) return cudaGetLastError();
  using T = typename DevT<H>::type;
  const T *x = dptr(xh), *dy = dptr(dyh);
  T* dx = dptr(dxh);
  double* stats = work;
  double* partial = work + groups * 4;
  const int64_t total = groups * n;
  if (n <= kWarpRowMax) {
    norm_rows_backward_kernel<T><<<blocks_for(groups * 32), kThreads, 0, s>>>(
        x, w, dy, eps, dx, stats, groups, static_cast<int>(n), static_cast<int>(C), 1.0 / static_cast<double>(n));
  } else {
    group_sums<2>(NormMoments<T>{x, stats, n, eps}, groups, n, partial, s);
    group_sums<2>(NormGradMoments<T>{x, w, dy, stats, n, C}, groups, n, partial, s);
    norm_dx_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(x, w, dy, stats, dx, total, n, C);
  }
  if (dw || db) column_sums<2>(NormParamGrads<T>{x, dy, stats, dw, db, n, C}, total / C, C, partial, s);
  return cudaGetLastError();
}
template cudaError_t norm_backward(const float*, const float*, const float*, float, float*, float*, float*, int64_t,
                                   int64_t, int64_t, double*, cudaStream_t);
template cudaError_t norm_backward(const bf16*, const float*, const bf16*, float, bf16*, float*, float*, int64_t,
                                   int64_t, int64_t, double*, cudaStream_t);

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
  if (total > 0)
    channel_slice_backward_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(dptr(dy), dptr(dx), total, C, offset,
                                                                            width);
  return cudaGetLastError();
}
template cudaError_t channel_slice_backward(const float*, float*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
template cudaError_t channel_slice_backward(const bf16*, bf16*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);

template <class H_>
cudaError_t glu_backward(const H_* t, int64_t Ct, const H_* c, int64_t cw, int64_t gate_offset, int64_t value_offset,
                         Act act, const H_* dy, int64_t width, H_* dt, H_* dc, int64_t rows, cudaStream_t s) {
  using T = typename DevT<H_>::type;
  constexpr int64_t kMax = int64_t{1} << 31;
  if (rows * Ct >= kMax || rows * width >= kMax || rows * cw >= kMax) return cudaErrorInvalidValue;
  const int ct = static_cast<int>(Ct), w = static_cast<int>(width), c_w = static_cast<int>(cw);
  if (rows * Ct > 0)
    glu_dt_kernel<T><<<blocks_for(rows * Ct), kThreads, 0, s>>>(dptr(t), ct, dptr(c), c_w, static_cast<int>(gate_offset),
                                                                static_cast<int>(value_offset), act, dptr(dy), w,
                                                                dptr(dt), static_cast<int>(rows * Ct));
  if (dc && rows * cw > 0)
    glu_dc_kernel<T><<<blocks_for(rows * cw), kThreads, 0, s>>>(dptr(t), ct, c_w, static_cast<int>(gate_offset), act,
                                                                dptr(dy), w, dptr(dc), static_cast<int>(rows * cw));
  return cudaGetLastError();
}
template cudaError_t glu_backward(const float*, int64_t, const float*, int64_t, int64_t, int64_t, Act, const float*,
                                  int64_t, float*, float*, int64_t, cudaStream_t);
template cudaError_t glu_backward(const bf16*, int64_t, const bf16*, int64_t, int64_t, int64_t, Act, const bf16*,
                                  int64_t, bf16*, bf16*, int64_t, cudaStream_t);

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
    if (vec)
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

int64_t depthwise_backward_work(int64_t B, int64_t Ho, int64_t Wo, int64_t C, int kh, int kw) {
  return column_work(B * Ho * Wo, static_cast<int64_t>(kh) * kw * C, 1);  // ≥ the bias's C columns
}

template <class H_>
cudaError_t depthwise_conv2d_backward(const H_* xh, const float* w, const H_* dyh, H_* dxh, float* dw, float* db,
                                      int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, int kh, int kw,
                                      int sh, int sw, int ph, int pw, double* work, cudaStream_t s) {
  using T = typename DevT<H_>::type;
  const T *x = dptr(xh), *dy = dptr(dyh);
  T* dx = dptr(dxh);
  const int64_t total = B * H * W * C;
  const bool fits_int = total < (int64_t{1} << 31) && B * Ho * Wo * C < (int64_t{1} << 31);
  const DwShape d{static_cast<int>(H), static_cast<int>(W), static_cast<int>(C), static_cast<int>(Ho),
                  static_cast<int>(Wo), sh, sw, ph, pw};
  if (fits_int && kh == kw && (kh == 3 || kh == 5 || kh == 7)) {
    const int b = static_cast<int>(B);
    if (kh == 3) depthwise_backward_fixed<3, 3>(x, w, dy, dx, dw, b, d, work, s);
    if (kh == 5) depthwise_backward_fixed<5, 5>(x, w, dy, dx, dw, b, d, work, s);
    if (kh == 7) depthwise_backward_fixed<7, 7>(x, w, dy, dx, dw, b, d, work, s);
    if (db) column_sums<1>(ColumnSum<T>{dy, db, C}, B * Ho * Wo, C, work, s);  // after dw's finish: work is free
    return cudaGetLastError();
  }
  if (dx && total > 0)
    depthwise_dx_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(w, dy, dx, total, H, W, C, Ho, Wo, kh, kw, sh, sw,
                                                                  ph, pw);
  const int64_t rows = B * Ho * Wo;
  if (dw)
    column_sums<1>(DepthwiseWeightGrad<T>{x, dy, dw, H, W, C, Ho, Wo, kh, kw, sh, sw, ph, pw}, rows,
                   static_cast<int64_t>(kh) * kw * C, work, s);
  if (db) column_sums<1>(ColumnSum<T>{dy, db, C}, rows, C, work, s);
  return cudaGetLastError();
}
template cudaError_t depthwise_conv2d_backward(const float*, const float*, const float*, float*, float*, float*,
                                               int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int,
                                               int, int, double*, cudaStream_t);
template cudaError_t depthwise_conv2d_backward(const bf16*, const float*, const bf16*, bf16*, float*, float*, int64_t,
                                               int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int,
                                               int, double*, cudaStream_t);

cudaError_t depthwise_weight_flip_hwc(const float* w, float* flipped, int64_t C, int kh, int kw, cudaStream_t s) {
  const int64_t total = C * kh * kw;
  if (total > 0) depthwise_weight_flip_hwc_kernel<<<blocks_for(total), kThreads, 0, s>>>(w, flipped, total, C, kh, kw);
  return cudaGetLastError();
}

cudaError_t conv_weight_grad_add(const float* dwk, float* dw, int64_t Co, int64_t Ci, int kh, int kw, cudaStream_t s) {
  const int64_t total = Co * Ci * kh * kw;
  if (total > 0) conv_weight_grad_add_kernel<<<blocks_for(total), kThreads, 0, s>>>(dwk, dw, total, Ci, kh, kw);
  return cudaGetLastError();
}

template <class H_>
cudaError_t col2im_nhwc(const H_* dcolsh, H_* dxh, int64_t B, int64_t H, int64_t W, int64_t C, int kh, int kw, int sh,
                        int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s) {
  using T = typename DevT<H_>::type;
  constexpr int V = kVec<T>;
  const T* dcols = dptr(dcolsh);
  T* dx = dptr(dxh);
  const int64_t total = B * H * W * C;
  if (total <= 0) return cudaGetLastError();
  if (total < (int64_t{1} << 31) && B * Ho * Wo < (int64_t{1} << 31)) {
    const bool vec = C % V == 0 && reinterpret_cast<uintptr_t>(dcols) % 16 == 0 && reinterpret_cast<uintptr_t>(dx) % 16 == 0;
    const int64_t vectors = vec ? total / V : total;
    const int h = static_cast<int>(H), w = static_cast<int>(W), c = static_cast<int>(C), ho = static_cast<int>(Ho),
              wo = static_cast<int>(Wo), n = static_cast<int>(vectors);
    if (vec)
      col2im_i32_kernel<T, V><<<blocks_for(vectors), kThreads, 0, s>>>(dcols, dx, n, h, w, c, kh, kw, sh, sw, ph, pw,
                                                                        ho, wo);
    else
      col2im_i32_kernel<T, 1><<<blocks_for(vectors), kThreads, 0, s>>>(dcols, dx, n, h, w, c, kh, kw, sh, sw, ph, pw,
                                                                        ho, wo);
    return cudaGetLastError();
  }
  col2im_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(dcols, dx, total, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo);
  return cudaGetLastError();
}
template cudaError_t col2im_nhwc(const float*, float*, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int,
                                 int, int64_t, int64_t, cudaStream_t);
template cudaError_t col2im_nhwc(const bf16*, bf16*, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int, int,
                                 int64_t, int64_t, cudaStream_t);

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
