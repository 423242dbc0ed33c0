// LayerNorm's backward with its parameter gradients in one pass, 16 bytes a load: the default since
// 2026-12-06 (METAFORMER_CUDA_NORM_BWD=vec; =fused runs the kernel before). Beside it,
// backward_kernels.cu's norm_rows_backward_fused_kernel gives each lane channels lane, lane + 32, …:
// 2-byte loads and stores for bf16, up to 24 of each a lane and row. Here, as in the forward's
// layer_norm_vec_kernel, G lanes take a row (G the power of two at least the row's vectors, at most
// 32; 32 / G rows a warp) and lane `sub` of a row holds its vectors sub, sub + G, … (NV of them), so
// each load and store moves kVec<T> elements.
//
// The arithmetic is the fused kernel's: float element terms, the row sums in double over the row's
// lanes, dx = rstd · (dy·w − m0 − x̂·m1). dW and db: float sums a lane over the rows it takes, then
// added in double in a fixed order (warps, then a warp's row slots) into the same partials layout,
// which column_finish_kernel adds over the blocks: deterministic, without atomics, in another order
// than the fused kernel's (so not its bits). Included by backward_kernels.cu only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/backward_common.cuh"

namespace mf::cuda::backward::detail {

// Over the G lanes of a row (aligned groups of G lanes: xor offsets below G stay in the group).
template <int G>
__device__ __forceinline__ double row_group_sum(double v) {
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// rstd = 1 / sqrt(var + eps) of a row whose G lanes hold q = their float Σ (x − meanf)²: the lanes
// added in double (the butterfly: a fixed order, warp_sum's at G = 32), Σ (x − meanf)² = Σ (x − mean)²
// + n (mean − meanf)² with the second term taken off in double, then a float rsqrt refined by one
// Newton step in double. Also the warp-per-row kernels' (G = 32) in backward_kernels.cu.
template <int G>
__device__ __forceinline__ double row_group_rstd(float q, double mean, float meanf, double inv_n, float eps) {
  const double dm = mean - static_cast<double>(meanf);
  double var = row_group_sum<G>(static_cast<double>(q)) * inv_n - dm * dm;
  if (var < 0) var = 0;
  const double v = var + static_cast<double>(eps);
  double rstd = rsqrtf(static_cast<float>(v));
  return rstd * (1.5 - 0.5 * v * rstd * rstd);
}

// res and RS as in norm_rows_backward_fused_kernel: dx = res (· rs[c] with RS) + the norm's value,
// and with RS a third sum, x · res, into the partials (K = 3 a chunk).
// Registers: with RS and NV = 2 (rows of 257–512 bf16 channels: ConvFormer's and CAFormer's stages 3
// and 4) the kernel held rs in registers too and took 158 of them, one block of 8 warps an SM, and ran
// at half the non-RS kernel's rate (H100, 2026-12-06: 3.2 against 1.55 ms in two convformer_s18
// steps, for a third more bytes). rs is read where it is used (16 bytes from L1 a vector), and the
// launch bound asks for two blocks an SM. The bound is given for every variant, at the blocks an SM
// each had without one: a bound of one block let ptxas take 141 registers for the 16-lane kernel
// (64 without a bound), which then ran 2.5 times slower (H100, 2026-12-06).
constexpr int norm_backward_min_blocks(int nv, bool rs) { return nv == 1 ? (rs ? 3 : 4) : nv == 2 ? 2 : 1; }

template <class T, int G, int NV, bool RS = false>
__global__ void __launch_bounds__(kThreads, norm_backward_min_blocks(NV, RS))
    norm_rows_backward_vec_kernel(const T* x, const float* w, const T* dy, float eps, const T* res, const float* rs,
                                  T* dx, bool params, int64_t rows, int n, double inv_n, double* partial) {
  constexpr int V = kVec<T>, kWarps = kThreads / 32, R = 32 / G, E = NV * V, K = RS ? 3 : 2, ER = RS ? E : 1;
  __shared__ float red[kWarps * 32 * E];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane % G, slot = lane / G;
  const int64_t chunks = gridDim.x, per = (rows + chunks - 1) / chunks;
  const int64_t r0 = blockIdx.x * per, r1 = r0 + per < rows ? r0 + per : rows;
  // Vector i of this lane: channels (sub + G·i)·V … + V − 1 of its row, inside the row or not at all.
  auto channel = [&](int i) { return (sub + G * i) * V; };
  float wv[E], pw[E], pb[E], pr[ER];
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    float t[V];
    if (channel(i) < n) {
      kernels::load_params(w, channel(i), 1.f, t);
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) t[e] = 0.f;
    }
#pragma unroll
    for (int e = 0; e < V; ++e) {
      wv[i * V + e] = t[e], pw[i * V + e] = 0.f, pb[i * V + e] = 0.f;
      if constexpr (RS) pr[i * V + e] = 0.f;
    }
  }
  // A warp takes R rows a step; the loop's test is the same for the whole warp (the shuffles below
  // need every lane), rows past the block's end are computed on zeros and not stored.
  for (int64_t rb = r0 + int64_t(warp) * R; rb < r1; rb += int64_t(kWarps) * R) {
    const int64_t r = rb + slot;
    const bool live = r < r1;
    float xv[E], gv[E];
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      float a[V], g[V];
      if (live && channel(i) < n) {
        load16(x + r * n + channel(i), a);
        load16(dy + r * n + channel(i), g);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) a[e] = 0.f, g[e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < V; ++e) xv[i * V + e] = a[e], gv[i * V + e] = g[e], s += a[e];
    }
    const double mean = row_group_sum<G>(static_cast<double>(s)) * inv_n;
    const float meanf = static_cast<float>(mean);
    float q = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i)
      if (channel(i) < n)
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float d = xv[i * V + e] - meanf;
          q = fmaf(d, d, q);
        }
    const float rstdf = static_cast<float>(row_group_rstd<G>(q, mean, meanf, inv_n, eps));
    float t0f = 0.f, t1f = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i)
      if (channel(i) < n)
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float xh = (xv[i * V + e] - meanf) * rstdf, gg = gv[i * V + e] * wv[i * V + e];
          t0f += gg;
          t1f = fmaf(gg, xh, t1f);
        }
    const float m0 = static_cast<float>(row_group_sum<G>(static_cast<double>(t0f)) * inv_n);
    const float m1 = static_cast<float>(row_group_sum<G>(static_cast<double>(t1f)) * inv_n);
    if (!live) continue;  // after the last shuffle of this step
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      if (channel(i) >= n) continue;
      float o[V];
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const int j = i * V + e;
        const float xh = (xv[j] - meanf) * rstdf, gg = gv[j] * wv[j];
        o[e] = rstdf * (gg - m0 - xh * m1);
        pw[j] = fmaf(gv[j], xh, pw[j]);
        pb[j] += gv[j];
      }
      if (res) {  // the block's skip gradient, added to the norm's value rounded to float
        float rv[V], sv[V];
        load16(res + r * n + channel(i), rv);
        if constexpr (RS) kernels::load_params(rs, channel(i), 1.f, sv);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          if constexpr (RS) {
            o[e] = rv[e] * sv[e] + o[e];
            pr[i * V + e] = fmaf(xv[i * V + e], rv[e], pr[i * V + e]);
          } else {
            o[e] = rv[e] + o[e];
          }
        }
      }
      store16(dx + r * n + channel(i), o);
    }
  }
  if (!params) return;  // the same for every thread of the launch: no barrier is skipped by some only
  for (int k = 0; k < K; ++k) {
#pragma unroll
    for (int j = 0; j < E; ++j) {
      float p = k == 0 ? pw[j] : pb[j];
      if constexpr (RS) p = k == 2 ? pr[j] : p;
      red[(warp * 32 + lane) * E + j] = p;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < n; c += kThreads) {
      const int vq = c / V, e = c % V, sb = vq % G, i = vq / G;
      double t = 0;
      for (int y = 0; y < kWarps; ++y)
#pragma unroll
        for (int sl = 0; sl < R; ++sl) t += red[(y * 32 + sl * G + sb) * E + i * V + e];
      partial[(static_cast<int64_t>(blockIdx.x) * K + k) * n + c] = t;
    }
    __syncthreads();
  }
}

// Launches the kernel above on `grid` blocks (the fused kernel's chunks, so that column_finish_kernel
// reads the same partials) where it applies: rows of whole 16-byte vectors, at most 3 · 32 of them
// (768 bf16 channels), 16-byte aligned pointers. Returns false (nothing launched) otherwise.
template <class T, bool RS>
bool launch_norm_rows_backward_vec(const T* x, const float* w, const T* dy, float eps, const T* res, const float* rs,
                                   T* dx, bool params, int64_t rows, int n, unsigned grid, double* partial,
                                   cudaStream_t s) {
  constexpr int V = kVec<T>;
  using kernels::aligned16;
  if (n % V != 0 || n / V > 3 * 32 || !aligned16(x) || !aligned16(dy) || !aligned16(dx) || !aligned16(w) ||
      (res && !aligned16(res)) || (RS && !aligned16(rs)))
    return false;
  const int nvec = n / V;
  const double inv_n = 1.0 / static_cast<double>(n);
  auto go = [&](auto kernel) {
    kernel<<<grid, kThreads, 0, s>>>(x, w, dy, eps, res, rs, dx, params, rows, n, inv_n, partial);
  };
  if (nvec <= 1) go(norm_rows_backward_vec_kernel<T, 1, 1, RS>);
  else if (nvec <= 2) go(norm_rows_backward_vec_kernel<T, 2, 1, RS>);
  else if (nvec <= 4) go(norm_rows_backward_vec_kernel<T, 4, 1, RS>);
  else if (nvec <= 8) go(norm_rows_backward_vec_kernel<T, 8, 1, RS>);
  else if (nvec <= 16) go(norm_rows_backward_vec_kernel<T, 16, 1, RS>);
  else if (nvec <= 32) go(norm_rows_backward_vec_kernel<T, 32, 1, RS>);
  else if (nvec <= 64) go(norm_rows_backward_vec_kernel<T, 32, 2, RS>);
  else go(norm_rows_backward_vec_kernel<T, 32, 3, RS>);
  return true;
}

}  // namespace mf::cuda::backward::detail
