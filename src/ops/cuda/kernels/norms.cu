// Norms: LayerNorm over channels (one warp per row), the residual + LayerNorm fusion, and GroupNorm
// with one group (chunked statistics merged with Chan's formula, then one apply pass). Statistics
// are fp32 and two-pass (mean first, then squared deviations from it), never E[x²] − E[x]².
#include "common.cuh"

#include <type_traits>

namespace mf::cuda::kernels {
namespace {

constexpr int kLnWarps = 8;            // rows per block of the LayerNorm kernel

// What a LayerNorm kernel does besides normalising (kMode). kLnResidual: the row is first
// r = x ⊙ rs + branch ⊙ ls, stored to `resid` (and normalised as stored, i.e. after rounding to TI).
// kLnScaledSkip: x is normalised as it is, and x ⊙ rs is stored to `resid`: the scaled skip term of a
// branch with a res scale, which the branch's last GEMM then adds in its epilogue (C = resid), so no
// separate scaled-residual pass reads x and the branch again (ConvFormer's and CAFormer's stages 3
// and 4).
constexpr int kLnPlain = 0, kLnResidual = 1, kLnScaledSkip = 2;
// One warp per row.
// kCached values per lane stay in registers (the launcher picks the smallest power of two with
// 32 · kCached ≥ C, so that a 64-channel row costs two loads a lane, not 32 predicated ones); rows
// wider than 1024 take the three-pass path.
template <typename TI, typename TO, int kMode, int kCached>
__global__ void __launch_bounds__(kLnWarps * 32)
    layer_norm_kernel(const TI* x, const float* rs, const TI* br, const float* ls, TI* resid, const float* w,
                      const float* b, float eps, TO* y, int64_t rows, int C) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kLnWarps + (threadIdx.x >> 5);
  if (row >= rows) return;  // a whole warp leaves; no block-level barrier below
  const int64_t base = row * C;
  auto input = [&](int c) {
    float t = to_f(x[base + c]);
    if (kMode == kLnResidual) {
      t = fmaf(to_f(br[base + c]), ls ? ls[c] : 1.f, t * (rs ? rs[c] : 1.f));
      const TI stored = from_f<TI>(t);
      resid[base + c] = stored;
      t = to_f(stored);
    } else if (kMode == kLnScaledSkip) {
      resid[base + c] = from_f<TI>(t * rs[c]);
    }
    return t;
  };
  const float inv_c = 1.f / static_cast<float>(C);
  if (C <= 32 * kCached) {
    float v[kCached];
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kCached; ++i) {
      const int c = lane + 32 * i;
      v[i] = c < C ? input(c) : 0.f;
      sum += v[i];
    }
    const float mean = warp_sum(sum) * inv_c;
    float sq = 0.f;
#pragma unroll
    for (int i = 0; i < kCached; ++i) {
      const int c = lane + 32 * i;
      const float d = c < C ? v[i] - mean : 0.f;
      sq = fmaf(d, d, sq);
    }
    const float rstd = 1.f / sqrtf(warp_sum(sq) * inv_c + eps);
#pragma unroll
    for (int i = 0; i < kCached; ++i) {
      const int c = lane + 32 * i;
      if (c < C) y[base + c] = from_f<TO>(fmaf((v[i] - mean) * rstd, w[c], b ? b[c] : 0.f));
    }
    return;
  }
  // Wide rows: three passes over global memory (the row stays in L1/L2). With the residual, the
  // first pass writes it and the others read it back (ordered within the warp by __syncwarp).
  const TI* src = kMode == kLnResidual ? resid : x;
  float sum = 0.f;
  for (int c = lane; c < C; c += 32) sum += input(c);
  if (kMode == kLnResidual) __syncwarp();
  const float mean = warp_sum(sum) * inv_c;
  float sq = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float d = to_f(src[base + c]) - mean;
    sq = fmaf(d, d, sq);
  }
  const float rstd = 1.f / sqrtf(warp_sum(sq) * inv_c + eps);
  for (int c = lane; c < C; c += 32)
    y[base + c] = from_f<TO>(fmaf((to_f(src[base + c]) - mean) * rstd, w[c], b ? b[c] : 0.f));
}

// The same for rows of whole 16-byte vectors (C a multiple of V = 8 bf16 or 4 floats, pointers
// aligned, TI = TO): a group of G lanes (a power of two) takes a row, each lane NV vectors, and the
// reductions shuffle inside the group. A 64-channel bf16 row is 8 lanes × one 16-byte load, four rows
// a warp, where the kernel above issued two 2-byte loads a lane (130 µs against about 50 µs of
// traffic for ConvFormer's first stage at batch 256 on an H200).
template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, int kMode, int G, int NV>
__global__ void __launch_bounds__(kLnWarps * 32)
    layer_norm_vec_kernel(const T* x, const float* rs, const T* br, const float* ls, T* resid, const float* w,
                          const float* b, float eps, T* y, int64_t rows, int C) {
  constexpr int V = kVec<T>;
  const int lane = threadIdx.x & 31, sub = lane % G;
  const int64_t row = (int64_t(blockIdx.x) * kLnWarps + (threadIdx.x >> 5)) * (32 / G) + lane / G;
  const bool live = row < rows;  // no early return: the whole warp takes part in the shuffles
  const int64_t base = (live ? row : 0) * C;
  float v[NV][V];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int c = (sub + G * i) * V;
    if (live && c < C) {
      load_vec(x + base + c, v[i]);
      if (kMode == kLnScaledSkip) {
        float rv[V], sk[V];
        load_params(rs, c, 1.f, rv);
#pragma unroll
        for (int j = 0; j < V; ++j) sk[j] = v[i][j] * rv[j];
        store_vec(resid + base + c, sk);
      }
      if (kMode == kLnResidual) {
        float r[V], lv[V], rv[V];
        load_vec(br + base + c, r);
        load_params(ls, c, 1.f, lv);
        load_params(rs, c, 1.f, rv);
#pragma unroll
        for (int j = 0; j < V; ++j) v[i][j] = fmaf(r[j], lv[j], v[i][j] * rv[j]);
        store_vec(resid + base + c, v[i]);
#pragma unroll
        for (int j = 0; j < V; ++j) v[i][j] = to_f(from_f<T>(v[i][j]));  // normalised as stored
      }
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) v[i][j] = 0.f;
    }
#pragma unroll
    for (int j = 0; j < V; ++j) sum += v[i][j];
  }
  const float inv_c = 1.f / static_cast<float>(C);
  const float mean = group_sum<G>(sum) * inv_c;
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < NV; ++i)
    if ((sub + G * i) * V < C) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float d = v[i][j] - mean;
        sq = fmaf(d, d, sq);
      }
    }
  const float rstd = 1.f / sqrtf(group_sum<G>(sq) * inv_c + eps);
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int c = (sub + G * i) * V;
    if (!live || c >= C) continue;
    float o[V], wv[V], bv[V];
    load_params(w, c, 1.f, wv);
    load_params(b, c, 0.f, bv);
#pragma unroll
    for (int j = 0; j < V; ++j) o[j] = fmaf((v[i][j] - mean) * rstd, wv[j], bv[j]);
    store_vec(y + base + c, o);
  }
}

template <typename TI, typename TO, int kMode>
cudaError_t layer_norm_launch(const TI* x, const float* rs, const TI* br, const float* ls, TI* resid, const float* w,
                              const float* b, float eps, TO* y, int64_t rows, int64_t C, cudaStream_t s) {
  if (C <= 0 || C > (int64_t(1) << 30)) return cudaErrorInvalidValue;
  if (rows <= 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>((rows + kLnWarps - 1) / kLnWarps);
  using DI = typename Dev<TI>::type;
  using DO = typename Dev<TO>::type;
  if constexpr (std::is_same_v<TI, TO>) {
    constexpr int V = kVec<DI>;
    const int64_t nvec = C / V;
    const bool vec = C % V == 0 && nvec <= 32 * 4 && aligned16(x) && aligned16(y) &&
                     (kMode != kLnResidual || aligned16(br)) && (kMode == kLnPlain || aligned16(resid)) &&
                     params_aligned16({w, b, rs, ls});
    if (vec) {
      const int g = nvec <= 1 ? 1 : nvec <= 2 ? 2 : nvec <= 4 ? 4 : nvec <= 8 ? 8 : nvec <= 16 ? 16 : 32;
      const int64_t rows_per_block = int64_t(kLnWarps) * (32 / g);
      const unsigned vgrid = static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block);
#define MF_LN_VEC(G, NV)                                                                                         \
  layer_norm_vec_kernel<DI, kMode, G, NV><<<vgrid, kLnWarps * 32, 0, s>>>(dev(x), rs, dev(br), ls, dev(resid), w, \
                                                                             b, eps, dev(y), rows, static_cast<int>(C))
      switch (g) {
        case 1: MF_LN_VEC(1, 1); break;
        case 2: MF_LN_VEC(2, 1); break;
        case 4: MF_LN_VEC(4, 1); break;
        case 8: MF_LN_VEC(8, 1); break;
        case 16: MF_LN_VEC(16, 1); break;
        default:
          if (nvec <= 32) MF_LN_VEC(32, 1);
          else if (nvec <= 64) MF_LN_VEC(32, 2);
          else MF_LN_VEC(32, 4);
      }
#undef MF_LN_VEC
      return cudaGetLastError();
    }
  }
#define MF_LN_LAUNCH(N)                                                                                   \
  layer_norm_kernel<DI, DO, kMode, N><<<grid, kLnWarps * 32, 0, s>>>(dev(x), rs, dev(br), ls, dev(resid), w, b, \
                                                                          eps, dev(y), rows, static_cast<int>(C))
  if (C <= 32)
    MF_LN_LAUNCH(1);
  else if (C <= 64)
    MF_LN_LAUNCH(2);
  else if (C <= 128)
    MF_LN_LAUNCH(4);
  else if (C <= 256)
    MF_LN_LAUNCH(8);
  else if (C <= 512)
    MF_LN_LAUNCH(16);
  else
    MF_LN_LAUNCH(32);  // C > 1024: the three-pass path inside
#undef MF_LN_LAUNCH
  return cudaGetLastError();
}

// ---- GroupNorm with one group ----

// Partial statistics of one chunk of kGnChunk elements of sample blockIdx.y: count, mean and the sum
// of squared deviations from that mean (the values stay in registers between the two reductions).
// VEC (the launcher checks that a sample's elements come in whole 16-byte vectors from a 16-byte
// aligned start, so every chunk's count is a whole number of vectors): each thread reads its
// kGnPerThread consecutive elements as 16-byte loads. Otherwise each reads elements kGnThreads apart,
// 2 bytes at a time for bf16: the only way before 2026-12-06, eight load instructions where one
// would do, and 10 % of PoolFormer-S12's bf16 inference kernel time on an H200. The load is __ldca
// (ld.global.ca.v4, the default caching spelled out): written as a uint4 read, nvcc split it into
// 4 + 4 + 8 bytes here, in either arrangement of the two paths tried.
template <typename T, bool VEC>
__global__ void __launch_bounds__(kGnThreads) gn_partial_kernel(const T* x, int64_t per, float* partial) {
  static_assert(kGnPerThread % kVec<T> == 0, "a thread's elements in whole vectors");
  __shared__ float scratch[32];
  const int64_t n0 = int64_t(blockIdx.x) * kGnChunk;
  const T* xs = x + int64_t(blockIdx.y) * per + n0;
  const int64_t count = per - n0 < kGnChunk ? per - n0 : kGnChunk;
  float v[kGnPerThread];
  float sum = 0.f;
  // Element i of this thread: index i · kGnThreads + tid of the chunk, or tid · kGnPerThread + i (VEC).
  auto valid = [&](int i) {
    return (VEC ? int64_t(threadIdx.x) * kGnPerThread + i : int64_t(i) * kGnThreads + threadIdx.x) < count;
  };
  if constexpr (VEC) {
#pragma unroll
    for (int q = 0; q < kGnPerThread / kVec<T>; ++q) {  // counts are whole vectors
      float part[kVec<T>];
      if (int64_t(threadIdx.x) * kGnPerThread + q * kVec<T> < count)
        unpack_vec<T>(__ldca(reinterpret_cast<const uint4*>(xs + threadIdx.x * kGnPerThread + q * kVec<T>)), part);
      else
#pragma unroll
        for (int e = 0; e < kVec<T>; ++e) part[e] = 0.f;
#pragma unroll
      for (int e = 0; e < kVec<T>; ++e) v[q * kVec<T> + e] = part[e];
    }
#pragma unroll
    for (int i = 0; i < kGnPerThread; ++i) sum += v[i];
  } else {
#pragma unroll
    for (int i = 0; i < kGnPerThread; ++i) {
      v[i] = valid(i) ? to_f(xs[int64_t(i) * kGnThreads + threadIdx.x]) : 0.f;
      sum += v[i];
    }
  }
  const float mean = block_sum(sum, scratch) / static_cast<float>(count);
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < kGnPerThread; ++i) {
    const float d = valid(i) ? v[i] - mean : 0.f;
    sq = fmaf(d, d, sq);
  }
  const float m2 = block_sum(sq, scratch);
  if (threadIdx.x == 0) {
    float* p = partial + (int64_t(blockIdx.y) * gridDim.x + blockIdx.x) * 3;
    p[0] = static_cast<float>(count);
    p[1] = mean;
    p[2] = m2;
  }
}

// Chan et al.'s pairwise update of (count, mean, M2).
__device__ __forceinline__ void chan_merge(float& n, float& mean, float& m2, float nb, float mb, float m2b) {
  const float total = n + nb;
  if (nb == 0.f) return;
  if (n == 0.f) {
    n = nb, mean = mb, m2 = m2b;
    return;
  }
  const float d = mb - mean, fb = nb / total;
  mean = fmaf(d, fb, mean);
  m2 = m2 + m2b + d * d * n * fb;
  n = total;
}

// One warp per sample merges its chunks: (mean, rstd) -> mean_rstd[b].
__global__ void gn_merge_kernel(const float* partial, int64_t chunks, int64_t per, float eps, float* mean_rstd) {
  const int lane = threadIdx.x;
  const float* p = partial + int64_t(blockIdx.x) * chunks * 3;
  float n = 0.f, mean = 0.f, m2 = 0.f;
  for (int64_t j = lane; j < chunks; j += 32) chan_merge(n, mean, m2, p[j * 3], p[j * 3 + 1], p[j * 3 + 2]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float nb = __shfl_xor_sync(0xffffffffu, n, o), mb = __shfl_xor_sync(0xffffffffu, mean, o),
                m2b = __shfl_xor_sync(0xffffffffu, m2, o);
    chan_merge(n, mean, m2, nb, mb, m2b);
  }
  if (lane == 0) {
    mean_rstd[2 * blockIdx.x] = mean;
    mean_rstd[2 * blockIdx.x + 1] = 1.f / sqrtf(m2 / static_cast<float>(per) + eps);
  }
}

template <typename TI, typename TO>
__global__ void gn_apply_kernel(const TI* x, const float* w, const float* b, const float* mean_rstd, TO* y, int64_t B,
                                int64_t per, int64_t C) {
  const int64_t sample = blockIdx.y;
  const float mean = mean_rstd[2 * sample], rstd = mean_rstd[2 * sample + 1];
  const TI* xs = x + sample * per;
  TO* ys = y + sample * per;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < per; i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t c = static_cast<uint32_t>(i) % static_cast<uint32_t>(C);  // per < 2^31 (launcher)
    ys[i] = from_f<TO>(fmaf((to_f(xs[i]) - mean) * rstd, w[c], b ? b[c] : 0.f));
  }
}

// 16 bytes a thread where the storage types match and the channels come in whole vectors (every
// zoo GroupNorm): the scalar kernel above moved 2 bytes a thread with a modulo each, 5 % of
// PoolFormer-S12's bf16 training kernel time (H200, 2026-12-06). The same arithmetic per element.
template <typename T>
__global__ void gn_apply_vec_kernel(const T* x, const float* w, const float* b, const float* mean_rstd, T* y,
                                    int64_t per, uint32_t per_v, uint32_t C) {
  constexpr uint32_t V = kVec<T>;
  const int64_t sample = blockIdx.y;
  const float mean = mean_rstd[2 * sample], rstd = mean_rstd[2 * sample + 1];
  const T* xs = x + sample * per;
  T* ys = y + sample * per;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < per_v; i += gridDim.x * blockDim.x) {
    const uint32_t c0 = (i * V) % C;
    float v[V], wv[V], bv[V];
    load_vec(xs + size_t(i) * V, v);
    load_params(w, c0, 1.f, wv);
    load_params(b, c0, 0.f, bv);
#pragma unroll
    for (uint32_t e = 0; e < V; ++e) v[e] = fmaf((v[e] - mean) * rstd, wv[e], bv[e]);
    store_vec(ys + size_t(i) * V, v);
  }
}

// partials_in: x's partial statistics, written by the kernel that wrote x (pool_branch's y_partials),
// in gn_partial_kernel's layout; null: read x for them here.
template <typename TI, typename TO>
cudaError_t group_norm1_launch(const TI* x, const float* w, const float* b, float eps, TO* y, int64_t B, int64_t per,
                               int64_t C, void* workspace, cudaStream_t s, const float* partials_in = nullptr) {
  if (C <= 0 || per % C != 0 || per >= (int64_t(1) << 31) || !workspace) return cudaErrorInvalidValue;
  if (B <= 0 || per == 0) return cudaSuccess;
  float* partial = static_cast<float*>(workspace);
  float* mean_rstd = partial + gn_partial_floats(B, per);
  if (partials_in) {
    if (B > 65535) return cudaErrorInvalidValue;
    gn_merge_kernel<<<static_cast<unsigned>(B), 32, 0, s>>>(partials_in, gn_chunks(per), per, eps, mean_rstd);
  } else if (const cudaError_t e = group_norm1_stats_t(x, mean_rstd, B, per, eps, partial, s); e != cudaSuccess) {
    return e;
  }
  if constexpr (std::is_same_v<TI, TO>) {
    using D = typename Dev<TI>::type;
    constexpr int64_t V = kVec<D>;
    if (C % V == 0 && aligned16(x) && aligned16(y) && params_aligned16({w, b})) {  // per is a multiple of C
      const int64_t per_v = per / V, blocks = (per_v + 255) / 256;
      const dim3 grid(static_cast<unsigned>(blocks < 1024 ? blocks : 1024), static_cast<unsigned>(B));
      gn_apply_vec_kernel<<<grid, 256, 0, s>>>(dev(x), w, b, mean_rstd, dev(y), per, static_cast<uint32_t>(per_v),
                                               static_cast<uint32_t>(C));
      return cudaGetLastError();
    }
  }
  const int64_t blocks_per_sample = (per + 1023) / 1024;
  const dim3 grid(static_cast<unsigned>(blocks_per_sample < 1024 ? blocks_per_sample : 1024),
                  static_cast<unsigned>(B));
  gn_apply_kernel<<<grid, 256, 0, s>>>(dev(x), w, b, mean_rstd, dev(y), B, per, C);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t group_norm1_partials_t(const T* x, int64_t B, int64_t per, float* partial, cudaStream_t s) {
  if (B <= 0 || per <= 0) return cudaSuccess;
  if (B > 65535) return cudaErrorInvalidValue;  // samples are grid.y
  using D = typename Dev<T>::type;
  const dim3 grid(static_cast<unsigned>(gn_chunks(per)), static_cast<unsigned>(B));
  if (per % kVec<D> == 0 && aligned16(x))
    gn_partial_kernel<D, true><<<grid, kGnThreads, 0, s>>>(dev(x), per, partial);
  else
    gn_partial_kernel<D, false><<<grid, kGnThreads, 0, s>>>(dev(x), per, partial);
  return cudaGetLastError();
}
template cudaError_t group_norm1_partials_t<float>(const float*, int64_t, int64_t, float*, cudaStream_t);
template cudaError_t group_norm1_partials_t<bf16>(const bf16*, int64_t, int64_t, float*, cudaStream_t);

template <typename T>
cudaError_t group_norm1_stats_t(const T* x, float* mean_rstd, int64_t B, int64_t per, float eps, float* partial,
                                cudaStream_t s) {
  if (B <= 0 || per <= 0) return cudaSuccess;
  if (const cudaError_t e = group_norm1_partials_t(x, B, per, partial, s); e != cudaSuccess) return e;
  gn_merge_kernel<<<static_cast<unsigned>(B), 32, 0, s>>>(partial, gn_chunks(per), per, eps, mean_rstd);
  return cudaGetLastError();
}
template cudaError_t group_norm1_stats_t<float>(const float*, float*, int64_t, int64_t, float, float*, cudaStream_t);
template cudaError_t group_norm1_stats_t<bf16>(const bf16*, float*, int64_t, int64_t, float, float*, cudaStream_t);

size_t group_norm1_workspace_bytes(int64_t B, int64_t per) {
  return static_cast<size_t>(gn_partial_floats(B, per) + 2 * B) * sizeof(float);
}

cudaError_t layer_norm(const float* x, const float* w, const float* b, float eps, float* y, int64_t rows, int64_t C,
                       cudaStream_t s) {
  return layer_norm_launch<float, float, kLnPlain>(x, nullptr, nullptr, nullptr, nullptr, w, b, eps, y, rows, C, s);
}
cudaError_t layer_norm(const bf16* x, const float* w, const float* b, float eps, bf16* y, int64_t rows, int64_t C,
                       cudaStream_t s) {
  return layer_norm_launch<bf16, bf16, kLnPlain>(x, nullptr, nullptr, nullptr, nullptr, w, b, eps, y, rows, C, s);
}
cudaError_t layer_norm(const float* x, const float* w, const float* b, float eps, bf16* y, int64_t rows, int64_t C,
                       cudaStream_t s) {
  return layer_norm_launch<float, bf16, kLnPlain>(x, nullptr, nullptr, nullptr, nullptr, w, b, eps, y, rows, C, s);
}
cudaError_t residual_layer_norm(const float* x, const float* res_scale, const float* branch, const float* layer_scale,
                                float* residual, const float* w, const float* b, float eps, float* y, int64_t rows,
                                int64_t C, cudaStream_t s) {
  return layer_norm_launch<float, float, kLnResidual>(x, res_scale, branch, layer_scale, residual, w, b, eps, y, rows,
                                                      C, s);
}
cudaError_t residual_layer_norm(const bf16* x, const float* res_scale, const bf16* branch, const float* layer_scale,
                                bf16* residual, const float* w, const float* b, float eps, bf16* y, int64_t rows,
                                int64_t C, cudaStream_t s) {
  return layer_norm_launch<bf16, bf16, kLnResidual>(x, res_scale, branch, layer_scale, residual, w, b, eps, y, rows, C,
                                                    s);
}

cudaError_t layer_norm_scaled_skip(const float* x, const float* res_scale, float* skip, const float* w, const float* b,
                                   float eps, float* y, int64_t rows, int64_t C, cudaStream_t s) {
  if (!res_scale || !skip) return cudaErrorInvalidValue;
  return layer_norm_launch<float, float, kLnScaledSkip>(x, res_scale, nullptr, nullptr, skip, w, b, eps, y, rows, C, s);
}
cudaError_t layer_norm_scaled_skip(const bf16* x, const float* res_scale, bf16* skip, const float* w, const float* b,
                                   float eps, bf16* y, int64_t rows, int64_t C, cudaStream_t s) {
  if (!res_scale || !skip) return cudaErrorInvalidValue;
  return layer_norm_launch<bf16, bf16, kLnScaledSkip>(x, res_scale, nullptr, nullptr, skip, w, b, eps, y, rows, C, s);
}

cudaError_t group_norm1(const float* x, const float* w, const float* b, float eps, float* y, int64_t B, int64_t per,
                        int64_t C, void* workspace, cudaStream_t s) {
  return group_norm1_launch(x, w, b, eps, y, B, per, C, workspace, s);
}
cudaError_t group_norm1(const bf16* x, const float* w, const float* b, float eps, bf16* y, int64_t B, int64_t per,
                        int64_t C, void* workspace, cudaStream_t s) {
  return group_norm1_launch(x, w, b, eps, y, B, per, C, workspace, s);
}
cudaError_t group_norm1(const float* x, const float* w, const float* b, float eps, bf16* y, int64_t B, int64_t per,
                        int64_t C, void* workspace, cudaStream_t s) {
  return group_norm1_launch(x, w, b, eps, y, B, per, C, workspace, s);
}
cudaError_t group_norm1_from_partials(const float* x, const float* partials, const float* w, const float* b, float eps,
                                      float* y, int64_t B, int64_t per, int64_t C, void* workspace, cudaStream_t s) {
  if (!partials) return cudaErrorInvalidValue;
  return group_norm1_launch(x, w, b, eps, y, B, per, C, workspace, s, partials);
}
cudaError_t group_norm1_from_partials(const bf16* x, const float* partials, const float* w, const float* b, float eps,
                                      bf16* y, int64_t B, int64_t per, int64_t C, void* workspace, cudaStream_t s) {
  if (!partials) return cudaErrorInvalidValue;
  return group_norm1_launch(x, w, b, eps, y, B, per, C, workspace, s, partials);
}
size_t group_norm1_partials_bytes(int64_t B, int64_t per) {
  return static_cast<size_t>(gn_partial_floats(B, per)) * sizeof(float);
}
cudaError_t group_norm1_stats(const float* x, float* mean_rstd, int64_t B, int64_t per, float eps, void* workspace,
                              cudaStream_t s) {
  return group_norm1_stats_t(x, mean_rstd, B, per, eps, static_cast<float*>(workspace), s);
}
cudaError_t group_norm1_stats(const bf16* x, float* mean_rstd, int64_t B, int64_t per, float eps, void* workspace,
                              cudaStream_t s) {
  return group_norm1_stats_t(x, mean_rstd, B, per, eps, static_cast<float*>(workspace), s);
}

}  // namespace mf::cuda::kernels
