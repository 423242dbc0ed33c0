// Shared by the backward kernel files (backward_kernels.cu, conv_backward.cu; device side only, not
// part of the public header): grid-stride loops, the float/bf16 element helpers, and the two
// atomics-free reductions in double and a fixed order:
//   - column sums (a parameter gradient per channel): a [rows, cols] view, blocks of 32 columns ×
//     8 row lanes summing one chunk of rows each into a partial, then the chunks' partials added in
//     order;
//   - group sums (norm statistics, StarReLU's two scalars): each group's n contiguous values cut into
//     chunks, one block per (group, chunk), then the chunks added in order.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "core/env_switch.h"
#include "ops/cuda/backward_kernels.h"
#include "ops/cuda/kernels/common.cuh"

namespace mf::cuda::backward::detail {

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
template <class T>
__device__ __forceinline__ void unpack16(const uint4& u, float (&v)[kVec<T>]) { kernels::unpack_vec<T>(u, v); }
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

inline unsigned blocks_for(int64_t n, int block = kThreads) {
  int64_t g = (n + block - 1) / block;
  if (g < 1) g = 1;
  if (g > 65535LL * 16) g = 65535LL * 16;
  return static_cast<unsigned>(g);
}

#define MF_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline double warp_max(double v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Over the block (blockDim.x a multiple of 32); every thread gets the result; ends with a barrier,
// so `scratch` (32 doubles) can be reused at once.
__device__ inline double block_sum(double v, double* scratch) {
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
__device__ inline double block_max(double v, double* scratch) {
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

// ---- column sums: out[col] (+)= Σ_rows f(row, col), K sums at a time ----------------------------
constexpr int kColTile = 32, kRowLanes = 8;
constexpr int64_t kRowsPerChunk = 256, kMaxChunks = 1024;

inline int64_t column_chunks(int64_t rows) {
  int64_t c = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  return c < 1 ? 1 : c > kMaxChunks ? kMaxChunks : c;
}
inline int64_t column_work(int64_t rows, int64_t cols, int K) { return column_chunks(rows) * cols * K; }

// The chunks' partials of each column, in a fixed order: lane y of a 32 × 32 block adds chunks
// y, y + 32, … of column x, then lane 0 adds the 32 lane sums in order. (One thread per column adding
// up to 1,024 chunks alone was a serial tail: 0.25 ms per call on the H200 for 64 columns.)
constexpr int kFinishLanes = 32;

// METAFORMER_CUDA_COLSUM_FINISH (a candidate, read on each call so that a test can run both): `fused`
// lets the scalar partials kernel's last block of each column tile add that tile's partials (its
// blocks count themselves on a ticket; the last to arrive finishes), so the finish kernel's launch
// and the stream's gap before it go, 122 and 58 of them in two mambaout_femto and poolformer_s12
// steps. It adds the partials in the finish kernel's order (the same lanes, each lane's chunks in the
// same order), so the sums are the same bits, whichever block is last. `separate` (the default):
// the finish kernel. The vector kernels keep it either way.
inline bool fused_column_finish() {
  return env_choice("METAFORMER_CUDA_COLSUM_FINISH", {"separate", "fused"}) == 1;
}
// The tickets of `tiles` column tiles, all 0 (backward_kernels.cu: one array for the process, zeroed
// on `s` when first made; each launch leaves its tickets at 0 again), or null when there are more
// tiles than it holds or it could not be made: then the finish kernel runs. One compute stream, so
// two launches never share them at once.
unsigned* column_finish_tickets(int64_t tiles, cudaStream_t s);

// The last step of a column's finish, by its row-0 thread: the 32 lane sums added in order, stored.
template <int K, class F>
__device__ __forceinline__ void store_lane_sums(const F& f, int64_t col,
                                                const double (*sh)[kFinishLanes][kColTile + 1]) {
  double s[K];
  for (int k = 0; k < K; ++k) {
    s[k] = 0;
    for (int y = 0; y < kFinishLanes; ++y) s[k] += sh[k][y][threadIdx.x];
  }
  f.store(col, s);
}

// Column tile `tile`'s finish inside a 32 × kRowLanes block: thread (x, y) computes the finish
// kernel's lane sums y, y + kRowLanes, … (each over chunks lane, lane + 32, …, in order, read from L2:
// other blocks wrote them), then row 0 adds the 32 lane sums in order and stores.
template <int K, class F>
__device__ void column_finish_tile(const F& f, int64_t tile, int64_t cols, int64_t chunks, const double* partial,
                                   double (*sh)[kFinishLanes][kColTile + 1]) {
  const int64_t col = tile * kColTile + threadIdx.x;
  for (int lane = threadIdx.y; lane < kFinishLanes; lane += kRowLanes) {
    double acc[K];
    for (int k = 0; k < K; ++k) acc[k] = 0;
    if (col < cols)
      for (int64_t c = lane; c < chunks; c += kFinishLanes)
        for (int k = 0; k < K; ++k) acc[k] += __ldcg(partial + (c * K + k) * cols + col);
    for (int k = 0; k < K; ++k) sh[k][lane][threadIdx.x] = acc[k];
  }
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) store_lane_sums<K>(f, col, sh);
}

// F: __device__ void operator()(int64_t row, int64_t col, double* v) const   (v[0..K) for one cell)
//    __device__ void store(int64_t col, const double* sums) const
// Finish (METAFORMER_CUDA_COLSUM_FINISH=fused): tickets[blockIdx.x] counts the tile's blocks done; the
// last adds the tile's partials (column_finish_tile) and sets its ticket back to 0 for the next call.
template <int K, bool Finish, class F>
__global__ void column_partials_kernel(F f, int64_t rows, int64_t cols, int64_t chunks, double* partial,
                                       unsigned* tickets) {
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
  if constexpr (Finish) {
    __shared__ double lanes[K][kFinishLanes][kColTile + 1];
    __shared__ bool last;
    __threadfence();  // this block's partials visible to every block before its ticket is
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0) last = atomicAdd(tickets + blockIdx.x, 1u) == gridDim.y - 1;
    __syncthreads();
    if (last) {
      column_finish_tile<K>(f, blockIdx.x, cols, chunks, partial, lanes);
      if (threadIdx.x == 0 && threadIdx.y == 0) tickets[blockIdx.x] = 0;
    }
  }
}

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
    if (threadIdx.y == 0 && col < cols) store_lane_sums<K>(f, col, sh);
    __syncthreads();
  }
}

// The same partials, 16 bytes of columns a thread (METAFORMER_CUDA_COLSUM=vec and the float variants
// below; docs/cuda.md has what each measured): a warp of the scalar kernel reads 64 bytes of a bf16 row
// per load, and each cell pays its own index arithmetic. A functor opts in with kV (its columns a
// thread), aligned() (its arrays allow 16-byte accesses) and vec(row, col0, v), v[k][e] for column col0
// + e. A block is lanes_x threads across vectors of columns times 256 / lanes_x row lanes (fewer
// where a thread's K · V double partials would pass 48 KB of shared memory). vec (and vec_finish) add
// the row's values to v, the thread's running sums, rather than return them (16 registers fewer).
// The sums' order differs from the scalar kernel's (fixed all the same: deterministic, other bits).
template <class F, class = void>
struct HasColumnVec : std::false_type {};
template <class F>
struct HasColumnVec<F, std::void_t<decltype(F::kV)>> : std::true_type {};

// R rows a step (METAFORMER_CUDA_COLSUM=batch, a candidate): the vector kernel with a thread's next R
// rows' loads issued before any of their stores. Why: the functors that write a gradient while they
// sum (ScaleGrads: dx and dbranch) store each row before the next row's loads in program order, and
// those stores wait for their own row's loads, so a warp has one row's loads in flight at a time. In
// the scalar kernel's SASS (nvcc 11.8, sm_90) each unrolled row is LDG, LDG, STG, LDG, STG, and
// ScaleGrads reached about a quarter of the memory bandwidth (3.7 ms of two poolformer_s12 steps on
// the H200 against about 1 ms of traffic), the same with 16-byte loads (`vec`): both latency-bound.
// A functor opts in with `In` (the raw registers of one row's loads), `Cols` (what its columns need
// on every row, such as the scales: read once a thread, where the vector kernel reads them every row),
// vec_cols(col0, Cols&), vec_load(row, col0, In&) and vec_finish(row, col0, const In&, const Cols&, v);
// its loads and stores of one row keep their order, and rows never alias each other. The sums are
// the vector kernel's, in its order.
template <class F, class = void>
struct HasColumnBatch : std::false_type {};
template <class F>
struct HasColumnBatch<F, std::void_t<typename F::In>> : std::true_type {};
constexpr int kColumnBatchRows = 4;  // ptxas 11.8, sm_90, ScaleGrads in bf16: 188 registers (2 rows: 160; vec: 145)

// Float sums a thread (METAFORMER_CUDA_COLSUM=fvec / fbatch; fbatch is ScaleGrads' default): `vec` and
// `batch` with each thread's running sums in float, added across the block and the chunks in double
// as before. Why: the double sums made those kernels register-bound, not memory-bound (ptxas 11.8,
// sm_90: 145 registers for `vec`, 188 for `batch` with ScaleGrads in bf16, so one block of 8 warps an
// SM with one row or four of loads in flight), which is why neither beat the scalar kernel. A
// thread's float sum covers its own rows of one chunk (at most kFloatRowsPerThread products, each
// one rounding: relative error ≤ 32 · 2⁻²⁴ ≈ 2e-6, far below the bf16 activations' 4e-3); the order
// is fixed, so the sums stay deterministic (other bits than the scalar kernel's). The chunks are
// longer than the double kernels' (kFloatRowsPerThread rows a thread), which spreads each block's
// reduction over more rows.
constexpr int64_t kFloatRowsPerThread = 32;

// METAFORMER_CUDA_COLSUM. automatic (unset): fbatch for the functors with batched rows (ScaleGrads:
// 2.58 → 1.21 ms in two poolformer_s12 bf16 steps, +5 % images/s; H200, 2026-12-06), scalar for the
// others (the bias sums' fvec was slower there, 1.08 → 1.33 ms, mambaout_femto -2 %). Functors
// without batch support run batch as scalar and fbatch as fvec.
enum class ColumnSums { automatic, scalar, vec, batch, fvec, fbatch };
inline ColumnSums column_sums_mode() {
  static const ColumnSums mode = [] {
    const int v = env_choice("METAFORMER_CUDA_COLSUM", {"auto", "scalar", "vec", "batch", "fvec", "fbatch"});
    return v < 0 ? ColumnSums::automatic : static_cast<ColumnSums>(v);
  }();
  return mode;
}

// Acc: a thread's running sums (double: vec and batch; float: fvec and fbatch). The functor's vec and
// vec_finish take v as Acc too.
// The float variants ask ptxas for 3 blocks of 256 threads an SM (2 with batched rows): without the
// bound ScaleGrads took 101 and 158 registers (nvcc 13.0, sm_90), one or two blocks an SM.
template <class Acc, int R>
constexpr int column_vec_min_blocks() {
  return std::is_same_v<Acc, float> ? (R == 1 ? 3 : 2) : 1;
}

template <int K, int V, class F, int R = 1, class Acc = double>
__global__ void __launch_bounds__(256, column_vec_min_blocks<Acc, R>())
    column_partials_vec_kernel(F f, int64_t rows, int64_t cols, int64_t chunks, int lanes_x, double* partial) {
  extern __shared__ double sh_vec[];  // [K][blockDim.x][V]
  const int tx = threadIdx.x % lanes_x, ty = threadIdx.x / lanes_x, lanes_y = blockDim.x / lanes_x;
  const int64_t col0 = (blockIdx.x * static_cast<int64_t>(lanes_x) + tx) * V;
  const int64_t chunk = blockIdx.y;
  const int64_t per = (rows + chunks - 1) / chunks;
  const int64_t r0 = chunk * per, r1 = r0 + per < rows ? r0 + per : rows;
  Acc acc[K][V];
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int e = 0; e < V; ++e) acc[k][e] = 0;
  if (col0 < cols) {
    if constexpr (R == 1) {
      if constexpr (HasColumnBatch<F>::value) {  // it stores too (ScaleGrads): unrolled, it spilled
        for (int64_t r = r0 + ty; r < r1; r += lanes_y) f.vec(r, col0, acc);
      } else {  // unrolled: a functor that only reads (the bias sums) has 4 rows' loads in flight
#pragma unroll 4
        for (int64_t r = r0 + ty; r < r1; r += lanes_y) f.vec(r, col0, acc);
      }
    } else {
      typename F::Cols per_col;
      f.vec_cols(col0, per_col);
      for (int64_t r = r0 + ty; r < r1; r += R * lanes_y) {
        typename F::In in[R];
#pragma unroll
        for (int j = 0; j < R; ++j)
          if (r + j * lanes_y < r1) f.vec_load(r + j * lanes_y, col0, in[j]);
#pragma unroll
        for (int j = 0; j < R; ++j)
          if (r + j * lanes_y < r1) f.vec_finish(r + j * lanes_y, col0, in[j], per_col, acc);
      }
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int e = 0; e < V; ++e) sh_vec[(k * blockDim.x + threadIdx.x) * V + e] = static_cast<double>(acc[k][e]);
  __syncthreads();
  if (ty == 0 && col0 < cols)
    for (int k = 0; k < K; ++k)
      for (int e = 0; e < V; ++e) {
        double s = 0;
        for (int y = 0; y < lanes_y; ++y) s += sh_vec[(k * blockDim.x + y * lanes_x + tx) * V + e];
        partial[(chunk * K + k) * cols + col0 + e] = s;
      }
}

template <int K, class F>
void column_sums(const F& f, int64_t rows, int64_t cols, double* work, cudaStream_t s) {
  if (cols <= 0) return;
  const int64_t chunks = column_chunks(rows);
  if constexpr (HasColumnVec<F>::value) {
    constexpr int V = F::kV;
    ColumnSums mode = column_sums_mode();
    if (mode == ColumnSums::automatic) mode = HasColumnBatch<F>::value ? ColumnSums::fbatch : ColumnSums::scalar;
    const bool floats = mode == ColumnSums::fvec || mode == ColumnSums::fbatch;
    const bool batch = (mode == ColumnSums::batch || mode == ColumnSums::fbatch) && HasColumnBatch<F>::value;
    if (mode != ColumnSums::scalar && cols % V == 0 && f.aligned()) {
      const int64_t vectors = cols / V;
      const int lanes_x = vectors < 32 ? static_cast<int>(vectors) : 32;
      // The block's double partials, K · V a thread, must fit the 48 KB of dynamic shared memory a
      // launch gets without opting in: GroupNorm's cell sums in bf16 (K = 4, V = 8) would need 64 KB at
      // 256 threads, and their launch failed with "invalid argument" (H100, 2026-12-07). They run 192.
      constexpr int kMaxThreads = static_cast<int>(std::min<size_t>(256, (48 * 1024) / (sizeof(double) * K * V)));
      const int lanes_y = std::max(1, kMaxThreads / lanes_x), block = lanes_x * lanes_y;
      // float sums: kFloatRowsPerThread rows a thread a chunk; never more chunks than the work was sized for
      int64_t used = chunks;
      if (floats) {
        const int64_t per = kFloatRowsPerThread * lanes_y;
        used = std::min(chunks, std::max<int64_t>(1, (rows + per - 1) / per));
      }
      const dim3 grid(static_cast<unsigned>((vectors + lanes_x - 1) / lanes_x), static_cast<unsigned>(used));
      const size_t shared = sizeof(double) * K * V * block;
      // Acc: float (fvec, fbatch) or double (vec, batch); batched rows only where the functor has them
      auto launch = [&](auto acc_type) {
        using Acc = decltype(acc_type);
        if constexpr (HasColumnBatch<F>::value) {
          if (batch) {
            column_partials_vec_kernel<K, V, F, kColumnBatchRows, Acc>
                <<<grid, block, shared, s>>>(f, rows, cols, used, lanes_x, work);
            return;
          }
        }
        column_partials_vec_kernel<K, V, F, 1, Acc><<<grid, block, shared, s>>>(f, rows, cols, used, lanes_x, work);
      };
      if (floats)
        launch(float{});
      else
        launch(double{});
      column_finish_kernel<K><<<blocks_for(cols, kColTile), dim3(kColTile, kFinishLanes), 0, s>>>(f, cols, used,
                                                                                                 work);
      return;
    }
  }
  const dim3 grid(static_cast<unsigned>((cols + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
  const dim3 block(kColTile, kRowLanes);
  if (fused_column_finish()) {
    if (unsigned* tickets = column_finish_tickets(grid.x, s)) {
      column_partials_kernel<K, true><<<grid, block, 0, s>>>(f, rows, cols, chunks, work, tickets);
      return;
    }
  }
  column_partials_kernel<K, false><<<grid, block, 0, s>>>(f, rows, cols, chunks, work, nullptr);
  column_finish_kernel<K><<<blocks_for(cols, kColTile), dim3(kColTile, kFinishLanes), 0, s>>>(f, cols, chunks, work);
}

// ---- group sums: per group g of n contiguous values, Σ_i f(g, i) ---------------------------------
constexpr int64_t kGroupChunk = 8192;

inline int64_t group_chunks(int64_t n) {
  int64_t c = (n + kGroupChunk - 1) / kGroupChunk;
  return c < 1 ? 1 : c > 65535 ? 65535 : c;
}
inline int64_t group_work(int64_t groups, int64_t n, int K) { return groups * group_chunks(n) * K; }

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
  static constexpr int kV = kVec<T>;
  bool aligned() const { return kernels::aligned16(dy); }
  template <class A>
  __device__ void vec(int64_t r, int64_t c0, A (&v)[1][kV]) const {
    float d[kV];
    load16(dy + r * cols + c0, d);
#pragma unroll
    for (int e = 0; e < kV; ++e) v[0][e] += d[e];
  }
};

}  // namespace mf::cuda::backward::detail
