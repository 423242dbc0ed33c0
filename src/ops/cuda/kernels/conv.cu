// Channels-last convolutions and pooling: depthwise k×k (with fused input/output activations and
// bias), PoolFormer's pool − x and its whole fused branch, global average pooling, and the im2col /
// weight reorders that turn dense convolutions into GEMMs.
#include "common.cuh"
#include "core/env_switch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <type_traits>

namespace mf::cuda::kernels {
namespace {

constexpr int kBlock = 256;

// ---- depthwise convolution ----
// Consecutive threads take consecutive channels (coalesced loads of each pixel's channel vector);
// each thread computes a strip of kStrip outputs along W so that the weights it loads are reused.

constexpr int kStrip = 8;

template <typename T>
__device__ __forceinline__ float dw_load(const T* x, int64_t at, const Act& pre, bool has_pre) {
  const float v = to_f(x[at]);
  return has_pre ? act_apply(pre, v) : v;
}

// V consecutive channels as one aligned vector access (8 or 16 bytes instead of V small ones).
template <typename T, int V> struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Stride 1 with a compile-time kernel width KW: each kernel row's input segment (kStrip + KW − 1
// pixels) is loaded once into registers, activation included, and reused by the whole strip. Each
// thread takes V consecutive channels (V = 2 where the channel count, strides and pointers allow
// vector loads; the launcher checks).
template <typename T, int KW, int V>
__global__ void dw_stride1_kernel(const T* x, int64_t xs, const float* w, const float* bias, T* y, int64_t ys,
                                  int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, int kh, int ph,
                                  int pw, Act pre, Act post) {
  const bool has_pre = pre.kind != ActKind::Identity;
  const int64_t strips = (Wo + kStrip - 1) / kStrip, Cv = C / V;
  const int64_t total = B * Ho * strips * Cv;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i % Cv) * V;
    int64_t r = i / Cv;
    const int64_t ow0 = (r % strips) * kStrip;
    r /= strips;
    const int64_t oh = r % Ho, b = r / Ho;
    float acc[kStrip][V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float b0 = bias ? bias[c + e] : 0.f;
#pragma unroll
      for (int t = 0; t < kStrip; ++t) acc[t][e] = b0;
    }
    for (int ki = 0; ki < kh; ++ki) {
      const int64_t ih = oh - ph + ki;
      if (ih < 0 || ih >= H) continue;
      const T* xrow = x + (b * H + ih) * W * xs + c;
      float seg[kStrip + KW - 1][V];
#pragma unroll
      for (int j = 0; j < kStrip + KW - 1; ++j) {
        const int64_t iw = ow0 - pw + j;
        if (iw >= 0 && iw < W) {
          const Pack<T, V> p = *reinterpret_cast<const Pack<T, V>*>(xrow + iw * xs);
#pragma unroll
          for (int e = 0; e < V; ++e) seg[j][e] = has_pre ? act_apply(pre, to_f(p.v[e])) : to_f(p.v[e]);
        } else {
#pragma unroll
          for (int e = 0; e < V; ++e) seg[j][e] = 0.f;
        }
      }
#pragma unroll
      for (int kj = 0; kj < KW; ++kj) {
        const Pack<float, V> wv = *reinterpret_cast<const Pack<float, V>*>(w + (int64_t(ki) * KW + kj) * C + c);
#pragma unroll
        for (int t = 0; t < kStrip; ++t)
#pragma unroll
          for (int e = 0; e < V; ++e) acc[t][e] = fmaf(seg[t + kj][e], wv.v[e], acc[t][e]);
      }
    }
    T* yrow = y + ((b * Ho + oh) * Wo) * ys + c;
#pragma unroll
    for (int t = 0; t < kStrip; ++t)
      if (ow0 + t < Wo) {
        Pack<T, V> o;
#pragma unroll
        for (int e = 0; e < V; ++e) o.v[e] = from_f<T>(act_apply(post, acc[t][e]));
        *reinterpret_cast<Pack<T, V>*>(yrow + (ow0 + t) * ys) = o;
      }
  }
}

// Any geometry: the same strips, bounds checked per tap.
template <typename T>
__global__ void dw_generic_kernel(const T* x, int64_t xs, const float* w, const float* bias, T* y, int64_t ys,
                                  int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, int kh, int kw,
                                  int sh, int sw, int ph, int pw, Act pre, Act post) {
  const bool has_pre = pre.kind != ActKind::Identity;
  const int64_t strips = (Wo + kStrip - 1) / kStrip;
  const int64_t total = B * Ho * strips * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % C;
    int64_t r = i / C;
    const int64_t ow0 = (r % strips) * kStrip;
    r /= strips;
    const int64_t oh = r % Ho, b = r / Ho;
    const float b0 = bias ? bias[c] : 0.f;
    float acc[kStrip];
#pragma unroll
    for (int t = 0; t < kStrip; ++t) acc[t] = b0;
    for (int ki = 0; ki < kh; ++ki) {
      const int64_t ih = oh * sh - ph + ki;
      if (ih < 0 || ih >= H) continue;
      const T* xrow = x + (b * H + ih) * W * xs + c;
      for (int kj = 0; kj < kw; ++kj) {
        const float wv = w[(int64_t(ki) * kw + kj) * C + c];
#pragma unroll
        for (int t = 0; t < kStrip; ++t) {
          const int64_t iw = (ow0 + t) * sw - pw + kj;
          if (ow0 + t < Wo && iw >= 0 && iw < W) acc[t] = fmaf(dw_load(xrow, iw * xs, pre, has_pre), wv, acc[t]);
        }
      }
    }
    T* yrow = y + ((b * Ho + oh) * Wo) * ys + c;
#pragma unroll
    for (int t = 0; t < kStrip; ++t)
      if (ow0 + t < Wo) yrow[(ow0 + t) * ys] = from_f<T>(act_apply(post, acc[t]));
  }
}

// Stride 1, square K×K kernel, through shared memory: a block computes a (kDwTile·RH) × kDwTile
// patch of outputs for kDwCh channels. It stages the input patch with its halo (activation applied,
// fp32) and the K·K·kDwCh weights in shared memory once, so each input value is read from global
// memory once per block instead of once per tap. Thread (row group g, channel c) computes RH output
// rows × kDwTile columns of the patch for one channel; a warp is 32 consecutive channels, so its
// shared-memory reads hit 32 different banks.
// - RH = 2 (maps taller than one tile): an input row loaded into registers serves both output rows,
//   so a thread reads K + 1 staged rows for 2·K·K·kDwTile FMAs instead of K rows for half as
//   many, and the staged halo is 2.4× the patch instead of 3.1×.
// - Staging moves 16 bytes (8 bf16 channels) a load where the channel count, row stride and pointer
//   allow (`vec`): scalar 2-byte staging with its index arithmetic per element cost more
//   instructions than the 392 FMAs a thread does.
// (The strip kernel above needs 64-128 registers a thread and ran at 25 % occupancy; this one about
// 40-60. METAFORMER_CUDA_DW=tiled1 keeps RH = 1 with scalar staging, the previous version, for A/B.)
// RG row groups of kDwCh threads (kDwTile by default); the patch is kDwTile columns wide.
// WREG (a candidate, METAFORMER_CUDA_DW=regw, not yet measured): each thread keeps its channel's K·K
// weights in registers instead of reading them from shared memory for every tap row. With RH = 2 a
// thread issues 98 shared-memory loads of weights and 112 of inputs for 784 FMAs; an SM issues one
// shared-memory load a clock against four FMA instructions, so the loads, not the FMAs, bound it.
// Weights in registers and RH = 4 (RG = 4 row groups, the same 16-row patch) make it 140 input loads and 49
// weight loads for 1,568 FMAs. The sums are the same, added in the same order.
// BATCH (METAFORMER_CUDA_DW=batch; the default for bf16 from the H100 A/B of 2026-12-05, cuda_check.sh
// dwbatch: 15.1 against 16.3 ms of two convformer_s18 steps' 7×7 kernels, bf16 inference 1.6-2.4 % more images/s;
// METAFORMER_CUDA_DW=tiled keeps the previous default): the staging issues all of a thread's global loads
// before it converts and stores any. The SASS of the default (nvcc 11.8, sm_90) shows why: the
// vector staging loop's trip count depends on blockDim, so it is not unrolled, and each of its
// about five iterations waits for its own 16-byte load before issuing the next; the weights' loop
// likewise. The compute loop is 761 FFMAs and 161 shared loads (near the FMA bound), yet the
// kernel runs at about a sixth of the FP32 rate, which fits blocks spending most of their life on
// five to ten serial load latencies (72 registers a thread: three blocks an SM to overlap them).
// Here the trip counts are compile-time (RG · kDwCh threads); the loads land in registers first,
// then come the conversions, the input activation (its device scalars read once: act_resolved)
// and the stores. The same values in shared memory, so the same sums. bf16 only; ptxas 11.8,
// sm_90: 80 registers (bounded for three blocks an SM, as the default's 72 give), 24 bytes of spills.

// Stores one pixel's V staged channels (a 16-byte load's worth, converted to float) at dst. The
// staging's consecutive threads write pixels' channel groups 4·V bytes apart: for bf16 (V = 8) that is
// 32 bytes, two 16-byte stores a thread. Were every thread to store its first half first, a quarter
// warp's eight 16-byte stores would land on banks 0-3, 8-11, 16-19 and 24-27 twice each (Nsight
// Compute on the H100, 2026-12-05: 5.5 wavefronts per shared store request, 28 % estimated).
// Threads of odd pixels (`swap`) store their second half first, so each quarter warp's eight cover
// the 32 banks once. fp32 (V = 4) is one store, already consecutive.
template <int V>
__device__ __forceinline__ void store_staged(float* dst, const float (&v)[V], bool swap) {
  float4* d = reinterpret_cast<float4*>(dst);
  if constexpr (V == 8) {
    // Component-wise selects: a select between two float4 objects went through a stack frame.
    float a[4], b[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) a[e] = swap ? v[e + 4] : v[e], b[e] = swap ? v[e] : v[e + 4];
    float4* first = d + (swap ? 1 : 0);
    float4* second = d + (swap ? 0 : 1);
    *first = make_float4(a[0], a[1], a[2], a[3]);
    *second = make_float4(b[0], b[1], b[2], b[3]);
  } else {
#pragma unroll
    for (int e = 0; e < V; e += 4) d[e / 4] = make_float4(v[e], v[e + 1], v[e + 2], v[e + 3]);
  }
}

constexpr int kDwTile = 8, kDwCh = 32;
// Bytes of the staged patch of a dw_tiled_kernel with RG · RH rows and TW columns of outputs.
constexpr size_t dw_patch_bytes(int K, int rows, int TW) {
  return sizeof(float) * (rows + K - 1) * (TW + K - 1) * kDwCh;
}

// Element i of a block's staged weights, [K·K taps][kDwCh channels] from the [taps][C] fp32 layout;
// zero past the NW elements or the channels.
__device__ __forceinline__ float dw_weight_at(const float* w, int i, int NW, int64_t c0, int64_t C) {
  const int c = i % kDwCh, tap = i / kDwCh;
  return i < NW && c0 + c < C ? w[int64_t(tap) * C + c0 + c] : 0.f;
}

// The batched staging (BATCH below) in two halves, so that a caller can issue a patch's loads before
// it stores them (a persistent, pipelined kernel did so a tile ahead: no faster, docs/cuda-log.md).
// dw_patch_load issues every 16-byte load of the
// SH × SW-pixel patch whose top left input pixel is (ih0, iw0), kDwCh channels from c0, as the
// NT threads' compile-time share (zero outside the map: the padding); dw_patch_store converts them
// to float, applies the input activation inside the map and stores them at the patch's layout
// ([pixel][kDwCh channels]). bf16 with vector staging only (the launchers check `vec`). PRE and POST
// (here and below): the input and output activations' kinds when fixed at compile time (act_static;
// -1: read at run time). Fixing them is what made batchact the default (H100, 2026-12-06: ConvFormer's
// StarReLU-first stage-1 call 0.484 → 0.293 ms): a per-element switch on the kind, with StarReLU's
// scalar pointers tested for every element, had been half of the kernel's instructions.
template <typename T, int SH, int SW>
constexpr int dw_patch_loads(int NT) {
  return (SH * SW * (kDwCh / kVec<T>) + NT - 1) / NT;
}
template <typename T, int SH, int SW, int NT, int IT>
__device__ __forceinline__ void dw_patch_load(uint4 (&raw)[IT], const T* x, int64_t xs, int64_t b, int64_t ih0,
                                              int64_t iw0, int64_t c0, int64_t H, int64_t W, int64_t C, int tid) {
  constexpr int G = kDwCh / kVec<T>, NV = SH * SW * G;
#pragma unroll
  for (int it = 0; it < IT; ++it) {
    const int i = tid + it * NT, g = i % G, p = i / G;
    const int64_t ih = ih0 + p / SW, iw = iw0 + p % SW, c = c0 + g * kVec<T>;
    raw[it] = make_uint4(0, 0, 0, 0);
    if (i < NV && c < C && ih >= 0 && ih < H && iw >= 0 && iw < W)
      raw[it] = *reinterpret_cast<const uint4*>(x + ((b * H + ih) * W + iw) * xs + c);
  }
}
template <typename T, int SH, int SW, int NT, bool SWZ, int PRE, int IT>
__device__ __forceinline__ void dw_patch_store(const uint4 (&raw)[IT], float* in_s, int64_t ih0, int64_t iw0,
                                               int64_t c0, int64_t H, int64_t W, int64_t C, int tid, const Act& pre_r,
                                               bool has_pre) {
  constexpr int V = kVec<T>, G = kDwCh / V, NV = SH * SW * G;
#pragma unroll
  for (int it = 0; it < IT; ++it) {
    const int i = tid + it * NT;
    if (i >= NV) break;
    const int g = i % G, p = i / G;
    const int64_t ih = ih0 + p / SW, iw = iw0 + p % SW, c = c0 + g * V;
    const bool inside = c < C && ih >= 0 && ih < H && iw >= 0 && iw < W;  // outside: the zero padding
    float v[V];
    unpack_vec<T>(raw[it], v);
    if (inside && has_pre) {
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] = act_static<PRE>(pre_r, v[j]);
    }
    store_staged<V>(in_s + p * kDwCh + g * V, v, SWZ && (p & 1));
  }
}

// The same staging with 32-bit index math, walked (lean, variant 10, the default). The batchact kernel's SASS
// (H200, 2026-12-06) spent about 830 instructions of staging before its first FMA: for every 16-byte
// load a 64-bit pixel index, a division by the patch width and 64-bit bounds tests. NT is a multiple
// of the G channel groups of a pixel, so a thread's channel group is the same at every step and its
// pixel advances by NT / G: the walk keeps the row and column and steps them by constants. `x_img` is
// the image's first pixel at channel c0; offsets within an image are 32-bit (the launcher checks
// H·W·xs < 2^31). dw_patch_load_lean returns which loads were inside the map (bit it), for the store.
template <typename T, int SH, int SW, int NT, int IT>
__device__ __forceinline__ unsigned dw_patch_load_lean(uint4 (&raw)[IT], const T* x_img, int xs, int ih0, int iw0,
                                                       int H, int W, bool channels_in, int tid) {
  constexpr int G = kDwCh / kVec<T>, NP = SH * SW, PS = NT / G;
  static_assert(NT % G == 0, "a thread's channel group must not change between steps");
  static_assert(IT <= 32, "one bit a load");
  const T* xg = x_img + (tid % G) * kVec<T>;
  int p = tid / G, r = p / SW, col = p % SW;
  unsigned inside = 0;
#pragma unroll
  for (int it = 0; it < IT; ++it) {
    const int ih = ih0 + r, iw = iw0 + col;
    raw[it] = make_uint4(0, 0, 0, 0);
    if (((it + 1) * PS <= NP || p < NP) && channels_in && unsigned(ih) < unsigned(H) && unsigned(iw) < unsigned(W)) {
      raw[it] = *reinterpret_cast<const uint4*>(xg + (ih * W + iw) * xs);
      inside |= 1u << it;
    }
    p += PS, col += PS % SW, r += PS / SW;
    if (col >= SW) col -= SW, ++r;
  }
  return inside;
}
template <typename T, int SH, int SW, int NT, bool SWZ, int PRE, int IT>
__device__ __forceinline__ void dw_patch_store_lean(const uint4 (&raw)[IT], unsigned inside, float* in_s, int tid,
                                                    const Act& pre_r, bool has_pre) {
  constexpr int V = kVec<T>, G = kDwCh / V, NP = SH * SW, PS = NT / G;
  const int g = tid % G, p0 = tid / G;
#pragma unroll
  for (int it = 0; it < IT; ++it) {
    const int p = p0 + it * PS;
    if ((it + 1) * PS > NP && p >= NP) break;
    float v[V];
    unpack_vec<T>(raw[it], v);
    if (((inside >> it) & 1u) && has_pre) {
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] = act_static<PRE>(pre_r, v[j]);
    }
    store_staged<V>(in_s + p * kDwCh + g * V, v, SWZ && (p & 1));
  }
}

// A thread's share of a staged patch: RH output rows from r0 and TW columns of channel c0 + c, from
// the staged input rows r0 … r0 + RH + K − 2 (each loaded into registers once and used by every output
// row it feeds), with the weights from shared memory (w_s, [tap][kDwCh]) or registers (WREG: wr);
// bias first, the output activation last, rows and columns past the map skipped.
template <typename T, int K, int RH, int TW, bool WREG, int POST>
__device__ __forceinline__ void dw_patch_compute(const float* in_s, const float* w_s,
                                                 const float (&wr)[WREG ? K * K : 1],
                                                 float b0, const Act& post_r, T* y, int64_t ys, int64_t b, int64_t Ho,
                                                 int64_t Wo, int64_t oh0, int64_t ow0, int64_t c0, int c, int r0) {
  constexpr int SW = TW + K - 1;
  float acc[RH][TW];
#pragma unroll
  for (int rr = 0; rr < RH; ++rr)
#pragma unroll
    for (int t = 0; t < TW; ++t) acc[rr][t] = b0;
#pragma unroll
  for (int ir = 0; ir < RH + K - 1; ++ir) {  // staged input row r0 + ir feeds output row rr through tap row ir − rr
    float seg[SW];
#pragma unroll
    for (int j = 0; j < SW; ++j) seg[j] = in_s[((r0 + ir) * SW + j) * kDwCh + c];
#pragma unroll
    for (int rr = 0; rr < RH; ++rr) {
      const int ki = ir - rr;
      if (ki < 0 || ki >= K) continue;
#pragma unroll
      for (int kj = 0; kj < K; ++kj) {
        const float wv = WREG ? wr[WREG ? ki * K + kj : 0] : w_s[(ki * K + kj) * kDwCh + c];
#pragma unroll
        for (int t = 0; t < TW; ++t) acc[rr][t] = fmaf(seg[t + kj], wv, acc[rr][t]);
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < RH; ++rr) {
    if (oh0 + r0 + rr >= Ho) break;
    T* yrow = y + ((b * Ho + oh0 + r0 + rr) * Wo + ow0) * ys + c0 + c;
#pragma unroll
    for (int t = 0; t < TW; ++t)
      if (ow0 + t < Wo) yrow[t * ys] = from_f<T>(act_static<POST>(post_r, acc[rr][t]));
  }
}

// TW (a candidate at 16, METAFORMER_CUDA_DW=wide): the patch's width in output columns. A thread's
// shared-memory loads per FMA fall with it: at RH = 2 and 7×7, 112 input and 98 weight loads for 784
// FMAs at TW = 8 (0.27 a FMA; the SM issues one such load a clock against four FMA instructions, so
// the loads bound the loop), 176 and 98 for 1,568 at TW = 16 (0.17). Its 62 KB patch passes the
// 48 KB of static shared memory, so it is dynamic (dw_patch_bytes).
template <typename T, int K, int RH, int RG = kDwTile, bool WREG = false, bool BATCH = false, bool SWZ = false,
          int TW = kDwTile, int PRE = -1, int POST = -1, bool LEAN = false>
__global__ void __launch_bounds__(RG * kDwCh, BATCH ? (TW > kDwTile ? 2 : 3) : 1)
    dw_tiled_kernel(const T* x, int64_t xs, const float* w, const float* bias, T* y, int64_t ys, int64_t H, int64_t W,
                    int64_t C, int64_t Ho, int64_t Wo, int ph, int pw, int tiles_w, bool vec, Act pre, Act post) {
  constexpr int TH = RG * RH, SH = TH + K - 1, SW = TW + K - 1;  // staged patch: SH × SW pixels
  constexpr bool kDynamic = TW != kDwTile;
  __shared__ __align__(16) float in_static[kDynamic ? 4 : SH * SW * kDwCh];
  extern __shared__ float4 dw_patch_dynamic[];
  float* const in_s = kDynamic ? reinterpret_cast<float*>(dw_patch_dynamic) : in_static;
  __shared__ float w_s[WREG ? 1 : K * K * kDwCh];
  const bool has_pre = pre.kind != ActKind::Identity;
  const int64_t b = blockIdx.z;
  const int64_t c0 = int64_t(blockIdx.y) * kDwCh;
  const int64_t oh0 = int64_t(blockIdx.x / tiles_w) * TH, ow0 = int64_t(blockIdx.x % tiles_w) * TW;
  const int tid = threadIdx.x;
  if (BATCH && vec) {  // as below, every global load of the thread first
    constexpr int NW = K * K * kDwCh, NT = RG * kDwCh, WIT = WREG ? 0 : (NW + NT - 1) / NT;
    const Act pre_r = act_resolved(pre);
    uint4 raw[dw_patch_loads<T, SH, SW>(NT)];
    float wv[WIT > 0 ? WIT : 1];
    unsigned inside = 0;
    if constexpr (LEAN)
      inside = dw_patch_load_lean<T, SH, SW, NT>(raw, x + b * H * W * xs + c0, int(xs), int(oh0 - ph), int(ow0 - pw),
                                                 int(H), int(W), c0 + (tid % (kDwCh / kVec<T>)) * kVec<T> < C, tid);
    else
      dw_patch_load<T, SH, SW, NT>(raw, x, xs, b, oh0 - ph, ow0 - pw, c0, H, W, C, tid);
#pragma unroll
    for (int it = 0; it < WIT; ++it) wv[it] = dw_weight_at(w, tid + it * NT, NW, c0, C);
    if constexpr (LEAN)
      dw_patch_store_lean<T, SH, SW, NT, SWZ, PRE>(raw, inside, in_s, tid, pre_r, has_pre);
    else
      dw_patch_store<T, SH, SW, NT, SWZ, PRE>(raw, in_s, oh0 - ph, ow0 - pw, c0, H, W, C, tid, pre_r, has_pre);
#pragma unroll
    for (int it = 0; it < WIT; ++it)
      if (tid + it * NT < NW) w_s[tid + it * NT] = wv[it];
  } else if (vec) {  // C, xs and x are multiples of V elements / 16 bytes: a vector is wholly in or out of range
    constexpr int V = kVec<T>, G = kDwCh / V;
    for (int i = tid; i < SH * SW * G; i += blockDim.x) {
      const int g = i % G, p = i / G;
      const int64_t ih = oh0 - ph + p / SW, iw = ow0 - pw + p % SW, c = c0 + g * V;
      float v[V];
      if (c < C && ih >= 0 && ih < H && iw >= 0 && iw < W) {
        load_vec(x + ((b * H + ih) * W + iw) * xs + c, v);
        if (has_pre) {
#pragma unroll
          for (int e = 0; e < V; ++e) v[e] = act_apply(pre, v[e]);
        }
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) v[e] = 0.f;
      }
      store_staged<V>(in_s + p * kDwCh + g * V, v, false);
    }
  } else {
    for (int i = tid; i < SH * SW * kDwCh; i += blockDim.x) {
      const int c = i % kDwCh, p = i / kDwCh;
      const int64_t ih = oh0 - ph + p / SW, iw = ow0 - pw + p % SW;
      float v = 0.f;
      if (c0 + c < C && ih >= 0 && ih < H && iw >= 0 && iw < W) {
        v = to_f(x[((b * H + ih) * W + iw) * xs + c0 + c]);
        if (has_pre) v = act_apply(pre, v);
      }
      in_s[i] = v;
    }
  }
  if (!WREG && !(BATCH && vec))
    for (int i = tid; i < K * K * kDwCh; i += blockDim.x) {
      const int c = i % kDwCh, tap = i / kDwCh;
      w_s[i] = c0 + c < C ? w[int64_t(tap) * C + c0 + c] : 0.f;
    }
  __syncthreads();
  const int c = tid % kDwCh, r0 = (tid / kDwCh) * RH;
  if (c0 + c >= C || oh0 + r0 >= Ho) return;
  float wr[WREG ? K * K : 1];
  if (WREG) {
#pragma unroll
    for (int tap = 0; tap < K * K; ++tap) wr[tap] = w[int64_t(tap) * C + c0 + c];
  }
  const float b0 = bias ? bias[c0 + c] : 0.f;
  dw_patch_compute<T, K, RH, TW, WREG, POST>(in_s, w_s, wr, b0, BATCH ? act_resolved(post) : post, y, ys, b, Ho, Wo,
                                             oh0, ow0, c0, c, r0);
}

__global__ void dw_weight_kernel(const float* w, float* out, int64_t C, int taps) {
  const int64_t n = C * taps;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i / taps, t = i % taps;
    out[t * C + c] = w[i];
  }
}

// The depthwise forward's variants, by METAFORMER_CUDA_DW's names (the index is the variant; the
// launcher below says what each is): the environment's choice, read once, unless a benchmark has
// set another in-process (set_depthwise_variant, bench/cuda_dev).
constexpr const char* kDepthwiseVariants[] = {"strip", "tiled1", "tiled", "regw", "mma", "mma2", "batch", "batch2",
                                              "wide", "batchact", "lean"};
constexpr int kDepthwiseDefault = 10;  // lean
std::atomic<int> depthwise_variant_override{-1};
int depthwise_variant() {
  static const int from_env = [] {
    const int v = env_choice("METAFORMER_CUDA_DW", kDepthwiseVariants, std::size(kDepthwiseVariants));
    return v < 0 ? kDepthwiseDefault : v;
  }();
  const int o = depthwise_variant_override.load(std::memory_order_relaxed);
  return o >= 0 ? o : from_env;
}

template <typename T>
cudaError_t depthwise_launch(const T* x, int64_t xs, const float* w, const float* bias, T* y, int64_t ys, int64_t B,
                             int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, int kh, int kw, int sh, int sw,
                             int ph, int pw, Act pre, Act post, cudaStream_t s) {
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || xs < C || ys < C || C < 0) return cudaErrorInvalidValue;
  if ((H + 2 * ph - kh) / sh + 1 != Ho || (W + 2 * pw - kw) / sw + 1 != Wo) return cudaErrorInvalidValue;
  if (B <= 0 || C == 0 || Ho <= 0 || Wo <= 0) return cudaSuccess;
  using D = typename Dev<T>::type;
  constexpr int V = 2;  // 4 took 128 registers a thread (25 % occupancy, ncu); 2 halves the register arrays
  auto aligned = [](const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
  const bool vec = C % V == 0 && xs % V == 0 && ys % V == 0 && aligned(x, V * sizeof(T)) &&
                   aligned(y, V * sizeof(T)) && aligned(w, V * sizeof(float)) && (!bias || aligned(bias, 4));
  const int64_t strips = (Wo + kStrip - 1) / kStrip;
  const unsigned grid = grid_for(B * Ho * strips * (vec ? C / V : C), kBlock);
  const bool s1 = sh == 1 && sw == 1;
  // The shared-memory kernel for the square 7×7 and 3×3 of the zoo (bf16 batch 256 on an H200: 1.38x
  // ConvFormer-S18's and 1.25x MambaOut-Femto's images/s over the strip kernels, docs/cuda.md);
  // METAFORMER_CUDA_DW=strip keeps the strip kernels for comparison. The grid's z is the batch
  // (≤ 65535 images a call).
  // Which depthwise kernels: the default (tiled, two rows a thread, vector staging), "tiled1" (the
  // tiled kernel's first version: one row a thread, scalar staging), "strip", or the candidate "regw"
  // (weights in registers, four rows a thread in four row groups: the same 16-row patches).
  // "mma" and "mma2" are the tensor-core kernel of depthwise_mma.cu for bf16 storage (candidates:
  // fp32 and the geometries it does not take stay on the default). "batch" (the default before batchact): the tiled
  // kernel's shapes with every global load of the staging issued first (BATCH above), bf16 with
  // vector staging; fp32 and scalar staging run "tiled". "batch2" (a candidate): batch with the
  // staging's shared stores in a bank-conflict-free order (store_staged, SWZ). "wide" (a candidate):
  // batch2 with patches 16 columns wide (TW) on maps wider than 8; narrower ones run batch2.
  // "batchact" (the default for bf16 from the H100 A/B of 2026-12-06 until lean): batch with the
  // activations' kinds fixed at compile time where the zoo's calls allow (act_static). "lean" (the
  // default since the H200 A/B of 2026-12-06: 7-17 % less time a launch, the same outputs): batchact
  // with the staging's index math in 32 bits, walked (dw_patch_load_lean).
  const int variant = depthwise_variant();
  if constexpr (std::is_same_v<T, bf16>) {
    if ((variant == 4 || variant == 5) && depthwise_mma_supported(B, C, kh, kw, sh, sw))
      return depthwise_mma(x, xs, w, bias, y, ys, B, H, W, C, Ho, Wo, kh, ph, pw, variant == 5, pre, post, s);
  }
  if (s1 && kh == kw && (kh == 7 || kh == 3) && variant > 0 && B <= 65535) {
    const int tiled_variant = variant >= 4 ? 2 : variant;  // mma's fp32 calls take the default; batch has its shapes
    // Row groups and rows a thread: regw four rows in four groups (two on maps of 8 rows or fewer:
    // the 8-row patch of a 7×7 map); the default two rows in eight groups (one on such maps).
    const bool regw = variant == 3;
    const int groups = regw ? 4 : kDwTile;
    const int rows = regw ? (Ho > 2 * groups ? 4 : 2) : (tiled_variant == 2 && Ho > kDwTile ? 2 : 1);
    const bool vec_stage = tiled_variant >= 2 && C % kVec<T> == 0 && xs % kVec<T> == 0 && aligned16(x);
    const int64_t th = int64_t(groups) * rows;
    const int tiles_w = static_cast<int>((Wo + kDwTile - 1) / kDwTile);
    const int64_t tiles = int64_t(tiles_w) * ((Ho + th - 1) / th);
    const dim3 tgrid(static_cast<unsigned>(tiles), static_cast<unsigned>((C + kDwCh - 1) / kDwCh),
                     static_cast<unsigned>(B));
    if (tiles > 0x7fffffff || tgrid.y > 65535) return cudaErrorInvalidValue;
    auto launch = [&](auto kernel) {
      kernel<<<tgrid, groups * kDwCh, 0, s>>>(dev(x), xs, w, bias, dev(y), ys, H, W, C, Ho, Wo, ph, pw, tiles_w,
                                              vec_stage, pre, post);
    };
    // batch: bf16 only (fp32's 16-byte vectors hold half the channels: ten loads a thread in flight
    // took 80 registers and 220 bytes of spills, ptxas 11.8).
    if constexpr (std::is_same_v<T, bf16>) {
      // Calls `f(pre_kind, post_kind)` with the activations' kinds as compile-time constants where the
      // zoo's calls have them (ConvFormer's StarReLU before the convolution, nothing after; MambaOut's
      // and dx's none), -1 (read at run time) otherwise: batchact (act_static).
      auto with_static_acts = [&](auto f) {
        using Id = std::integral_constant<int, static_cast<int>(ActKind::Identity)>;
        using Star = std::integral_constant<int, static_cast<int>(ActKind::StarReLU)>;
        using Any = std::integral_constant<int, -1>;
        if (post.kind == ActKind::Identity && pre.kind == ActKind::Identity) return f(Id{}, Id{});
        if (post.kind == ActKind::Identity && pre.kind == ActKind::StarReLU) return f(Star{}, Id{});
        return f(Any{}, Any{});
      };
      // lean: an image's elements must have 32-bit offsets.
      const bool lean = variant == 10 && H * W * xs < (int64_t(1) << 31);
      if ((variant == 6 || variant == 9 || variant == 10) && vec_stage) {  // batch, batchact, lean
        auto run = [&](auto pre_kind, auto post_kind, auto lean_walk) {
          constexpr int P = decltype(pre_kind)::value, Q = decltype(post_kind)::value;
          constexpr bool L = decltype(lean_walk)::value;
          if (kh == 7)
            rows == 2 ? launch(dw_tiled_kernel<D, 7, 2, kDwTile, false, true, false, kDwTile, P, Q, L>)
                      : launch(dw_tiled_kernel<D, 7, 1, kDwTile, false, true, false, kDwTile, P, Q, L>);
          else
            rows == 2 ? launch(dw_tiled_kernel<D, 3, 2, kDwTile, false, true, false, kDwTile, P, Q, L>)
                      : launch(dw_tiled_kernel<D, 3, 1, kDwTile, false, true, false, kDwTile, P, Q, L>);
          return cudaGetLastError();
        };
        if (variant == 6)
          return run(std::integral_constant<int, -1>{}, std::integral_constant<int, -1>{}, std::false_type{});
        if (lean) return with_static_acts([&](auto p, auto q) { return run(p, q, std::true_type{}); });
        return with_static_acts([&](auto p, auto q) { return run(p, q, std::false_type{}); });
      }
      if (variant == 8 && vec_stage && Wo > kDwTile) {  // wide: batch2 on patches of 16 columns (TW above)
        constexpr int TW = 2 * kDwTile;
        const int wide_tiles_w = static_cast<int>((Wo + TW - 1) / TW);
        const int64_t wide_tiles = int64_t(wide_tiles_w) * ((Ho + th - 1) / th);
        if (wide_tiles > 0x7fffffff) return cudaErrorInvalidValue;
        const dim3 wgrid(static_cast<unsigned>(wide_tiles), tgrid.y, tgrid.z);
        auto launch_wide = [&](auto kernel, size_t bytes, size_t& allowed) {
          if (const cudaError_t e = allow_dynamic_shared(kernel, bytes, allowed); e != cudaSuccess) return e;
          kernel<<<wgrid, groups * kDwCh, bytes, s>>>(dev(x), xs, w, bias, dev(y), ys, H, W, C, Ho, Wo, ph, pw,
                                                      wide_tiles_w, vec_stage, pre, post);
          return cudaGetLastError();
        };
        static size_t allowed[4] = {0, 0, 0, 0};
        if (kh == 7)
          return rows == 2 ? launch_wide(dw_tiled_kernel<D, 7, 2, kDwTile, false, true, true, TW>,
                                         dw_patch_bytes(7, 2 * kDwTile, TW), allowed[0])
                           : launch_wide(dw_tiled_kernel<D, 7, 1, kDwTile, false, true, true, TW>,
                                         dw_patch_bytes(7, kDwTile, TW), allowed[1]);
        return rows == 2 ? launch_wide(dw_tiled_kernel<D, 3, 2, kDwTile, false, true, true, TW>,
                                       dw_patch_bytes(3, 2 * kDwTile, TW), allowed[2])
                         : launch_wide(dw_tiled_kernel<D, 3, 1, kDwTile, false, true, true, TW>,
                                       dw_patch_bytes(3, kDwTile, TW), allowed[3]);
      }
      if ((variant == 7 || variant == 8) && vec_stage) {  // batch2: batch with conflict-free staging stores
        if (kh == 7)
          rows == 2 ? launch(dw_tiled_kernel<D, 7, 2, kDwTile, false, true, true>)
                    : launch(dw_tiled_kernel<D, 7, 1, kDwTile, false, true, true>);
        else
          rows == 2 ? launch(dw_tiled_kernel<D, 3, 2, kDwTile, false, true, true>)
                    : launch(dw_tiled_kernel<D, 3, 1, kDwTile, false, true, true>);
        return cudaGetLastError();
      }
    }
    if (regw && kh == 7)
      rows == 4 ? launch(dw_tiled_kernel<D, 7, 4, 4, true>) : launch(dw_tiled_kernel<D, 7, 2, 4, true>);
    else if (regw)
      rows == 4 ? launch(dw_tiled_kernel<D, 3, 4, 4, true>) : launch(dw_tiled_kernel<D, 3, 2, 4, true>);
    else if (kh == 7)
      rows == 2 ? launch(dw_tiled_kernel<D, 7, 2>) : launch(dw_tiled_kernel<D, 7, 1>);
    else
      rows == 2 ? launch(dw_tiled_kernel<D, 3, 2>) : launch(dw_tiled_kernel<D, 3, 1>);
    return cudaGetLastError();
  }
  if (s1 && kw == 7 && vec)
    dw_stride1_kernel<D, 7, V><<<grid, kBlock, 0, s>>>(dev(x), xs, w, bias, dev(y), ys, B, H, W, C, Ho, Wo, kh, ph,
                                                       pw, pre, post);
  else if (s1 && kw == 7)
    dw_stride1_kernel<D, 7, 1><<<grid, kBlock, 0, s>>>(dev(x), xs, w, bias, dev(y), ys, B, H, W, C, Ho, Wo, kh, ph,
                                                       pw, pre, post);
  else if (s1 && kw == 3 && vec)
    dw_stride1_kernel<D, 3, V><<<grid, kBlock, 0, s>>>(dev(x), xs, w, bias, dev(y), ys, B, H, W, C, Ho, Wo, kh, ph,
                                                       pw, pre, post);
  else if (s1 && kw == 3)
    dw_stride1_kernel<D, 3, 1><<<grid, kBlock, 0, s>>>(dev(x), xs, w, bias, dev(y), ys, B, H, W, C, Ho, Wo, kh, ph,
                                                       pw, pre, post);
  else
    dw_generic_kernel<D><<<grid_for(B * Ho * strips * C, kBlock), kBlock, 0, s>>>(
        dev(x), xs, w, bias, dev(y), ys, B, H, W, C, Ho, Wo, kh, kw, sh, sw, ph, pw, pre, post);
  return cudaGetLastError();
}

// ---- pooling ----

// avg_pool_k(x) − x at one element (count_include_pad=False), fp32.
template <typename T>
__device__ __forceinline__ float pool_minus_at(const T* x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t H,
                                               int64_t W, int64_t C, int k, float* self) {
  const int pad = k / 2;
  const int64_t h0 = h - pad < 0 ? 0 : h - pad, h1 = h - pad + k > H ? H : h - pad + k;
  const int64_t w0 = w - pad < 0 ? 0 : w - pad, w1 = w - pad + k > W ? W : w - pad + k;
  float acc = 0.f;
  for (int64_t i = h0; i < h1; ++i)
    for (int64_t j = w0; j < w1; ++j) acc += to_f(x[((b * H + i) * W + j) * C + c]);
  *self = to_f(x[((b * H + h) * W + w) * C + c]);
  return acc / static_cast<float>((h1 - h0) * (w1 - w0)) - *self;
}

// Grid (image row chunks of kBlock elements of W·C, H, B): the index within an image row is 32-bit,
// so the split into (w, c) is one cheap division. Requires W·C < 2^31, H and B ≤ 65535 (launcher).
template <typename T>
__global__ void pool_minus_kernel(const T* x, T* y, int64_t H, int64_t W, int64_t C, int k) {
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const uint32_t wc = blockIdx.x * blockDim.x + threadIdx.x;
  if (wc >= static_cast<uint32_t>(W * C)) return;
  const uint32_t w = wc / static_cast<uint32_t>(C), c = wc - w * static_cast<uint32_t>(C);
  float self;
  y[((b * H + h) * W) * C + wc] = from_f<T>(pool_minus_at(x, b, h, int64_t(w), int64_t(c), H, W, C, k, &self));
}

// y = rs ⊙ x + ls ⊙ w ⊙ rstd ⊙ (pool(x) − x), the per-sample rstd from group_norm1_stats.
template <typename T>
__global__ void pool_branch_kernel(const T* x, const float* gw, const float* mean_rstd, const float* rs,
                                   const float* ls, T* y, int64_t H, int64_t W, int64_t C, int k) {
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const uint32_t wc = blockIdx.x * blockDim.x + threadIdx.x;
  if (wc >= static_cast<uint32_t>(W * C)) return;
  const uint32_t w = wc / static_cast<uint32_t>(C), c = wc - w * static_cast<uint32_t>(C);
  float self;
  const float d = pool_minus_at(x, b, h, int64_t(w), int64_t(c), H, W, C, k, &self);
  const float branch = d * mean_rstd[2 * b + 1] * gw[c];
  y[((b * H + h) * W) * C + wc] = from_f<T>(fmaf(branch, ls ? ls[c] : 1.f, self * (rs ? rs[c] : 1.f)));
}

// One 16-byte vector of both pooling kernels above at pixel (b, h, w), channels cv·V …: pool(x) − x
// (branch = false) or PoolFormer's fused branch, as pool_branch_kernel (branch = true), into out.
// K > 0: k == K known at compile time (PoolFormer's 3; the default, METAFORMER_CUDA_POOL_TAPS=loop: K = 0): the K²
// taps' loads are issued together, from clamped (always valid) addresses, before any sum, and the
// centre tap is x itself. The runtime-bounded loop (K = 0) left one load in flight a thread, which
// kept pool_stats_kernel at about 3.6× its bytes' copy time (docs/cuda-log-2.md). The sums keep the
// loop's order (rows, then columns, skipping taps outside the image), so the bits are the same.
template <int K = 0, typename T>
__device__ __forceinline__ void pool_vec_at(const T* x, const float* gw, const float* mean_rstd, const float* rs,
                                            const float* ls, uint32_t H, uint32_t W, uint32_t CV, uint32_t b, int h,
                                            int w, uint32_t cv, int k, bool branch, float (&out)[kVec<T>]) {
  constexpr int V = kVec<T>;
  if constexpr (K > 0) k = K;
  const int pad = k / 2;
  const int h0 = max(h - pad, 0), h1 = min(h - pad + k, int(H)), w0 = max(w - pad, 0), w1 = min(w - pad + k, int(W));
  const size_t C = size_t(CV) * V, img = size_t(b) * H * W;
  float v[V];
#pragma unroll
  for (int e = 0; e < V; ++e) out[e] = 0.f;
  if constexpr (K > 0) {
    static_assert(K % 2 == 1, "odd windows");
    uint4 raw[K * K];
#pragma unroll
    for (int t = 0; t < K * K; ++t) {
      const int ih = min(max(h - pad + t / K, 0), int(H) - 1), iw = min(max(w - pad + t % K, 0), int(W) - 1);
      raw[t] = *reinterpret_cast<const uint4*>(x + (img + size_t(ih) * W + iw) * C + size_t(cv) * V);
    }
#pragma unroll
    for (int t = 0; t < K * K; ++t) {
      const int ih = h - pad + t / K, iw = w - pad + t % K;
      if (ih >= 0 && ih < int(H) && iw >= 0 && iw < int(W)) {
        unpack_vec<T>(raw[t], v);
#pragma unroll
        for (int e = 0; e < V; ++e) out[e] += v[e];
      }
    }
    unpack_vec<T>(raw[K * K / 2], v);
  } else {
    for (int ih = h0; ih < h1; ++ih)
      for (int iw = w0; iw < w1; ++iw) {
        load_vec(x + (img + size_t(ih) * W + iw) * C + size_t(cv) * V, v);
#pragma unroll
        for (int e = 0; e < V; ++e) out[e] += v[e];
      }
    load_vec(x + (img + size_t(h) * W + w) * C + size_t(cv) * V, v);
  }
  const float inv = 1.f / static_cast<float>((h1 - h0) * (w1 - w0));
  if (branch) {
    const float rstd = mean_rstd[2 * b + 1];
    float gv[V], lv[V], rv[V];
    load_params(gw, int64_t(cv) * V, 1.f, gv);
    load_params(ls, int64_t(cv) * V, 1.f, lv);
    load_params(rs, int64_t(cv) * V, 1.f, rv);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float d = (out[e] * inv - v[e]) * rstd * gv[e];
      out[e] = fmaf(d, lv[e], v[e] * rv[e]);
    }
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = out[e] * inv - v[e];
  }
}

// Both pooling kernels above, 16 bytes of channels a thread (C a multiple of the vector): the
// scalar kernels spent most of their time on 2-byte loads and index arithmetic. branch = false:
// pool(x) − x; true: PoolFormer's fused branch, as pool_branch_kernel. Flat over B·H·W·C/V, 32-bit.
template <int K, typename T>
__global__ void pool_vec_kernel(const T* x, const float* gw, const float* mean_rstd, const float* rs, const float* ls,
                                T* y, uint32_t H, uint32_t W, uint32_t CV, uint32_t total, int k, bool branch) {
  constexpr int V = kVec<T>;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const uint32_t cv = i % CV;
    uint32_t p = i / CV;
    const int w = static_cast<int>(p % W);
    p /= W;
    const int h = static_cast<int>(p % H);
    const uint32_t b = p / H;
    float acc[V];
    pool_vec_at<K>(x, gw, mean_rstd, rs, ls, H, W, CV, b, h, w, cv, k, branch, acc);
    store_vec(y + (size_t(b) * H * W + size_t(h) * W + w) * size_t(CV) * V + size_t(cv) * V, acc);
  }
}

// PoolFormer's fused branch (pool_vec_kernel's, branch = true) laid out as gn_partial_kernel's VEC
// pass: a block is one chunk of kGnChunk elements of sample blockIdx.y, a thread its kGnPerThread
// consecutive elements. Besides y it writes the chunk's partial statistics of y (count, mean, M2) as
// gn_partial_kernel would compute them from the stored values, in the same order, so the MLP half's
// GroupNorm (group_norm1_from_partials) gets the same bits without reading y a second time. A
// PoolFormer-S12 stage-1 sample is 98 chunks exactly; the pass over y it saves was about 5 % of a
// bf16 inference pass (gn_partial_kernel: 10 % for both of a block's norms, docs/cuda-log.md).
template <int K, typename T>
__global__ void __launch_bounds__(kGnThreads)
    pool_stats_kernel(const T* x, const float* gw, const float* mean_rstd, const float* rs, const float* ls, T* y,
                      uint32_t H, uint32_t W, uint32_t CV, uint32_t per, int k, float* partial) {
  constexpr int V = kVec<T>, Q = kGnPerThread / V;
  static_assert(kGnPerThread % V == 0, "a thread's elements in whole vectors");
  __shared__ float scratch[32];
  const uint32_t b = blockIdx.y, n0 = blockIdx.x * uint32_t(kGnChunk);
  const uint32_t count = per - n0 < uint32_t(kGnChunk) ? per - n0 : uint32_t(kGnChunk);
  const uint32_t first = threadIdx.x * uint32_t(kGnPerThread);  // within the chunk
  float v[kGnPerThread];
  float sum = 0.f;
#pragma unroll
  for (int q = 0; q < Q; ++q) {
    float acc[V];
    if (first + q * V < count) {  // counts are whole vectors
      const uint32_t n = n0 + first + q * V, p = n / (CV * V), cv = (n / V) % CV;
      pool_vec_at<K>(x, gw, mean_rstd, rs, ls, H, W, CV, b, int(p / W), int(p % W), cv, k, true, acc);
      store_vec(y + size_t(b) * per + n, acc);
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] = to_f(from_f<T>(acc[e]));  // the value stored
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] = 0.f;
    }
#pragma unroll
    for (int e = 0; e < V; ++e) v[q * V + e] = acc[e];
  }
#pragma unroll
  for (int i = 0; i < kGnPerThread; ++i) sum += v[i];
  const float mean = block_sum(sum, scratch) / static_cast<float>(count);
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < kGnPerThread; ++i) {
    const float d = first + i < count ? v[i] - mean : 0.f;
    sq = fmaf(d, d, sq);
  }
  const float m2 = block_sum(sq, scratch);
  if (threadIdx.x == 0) {
    float* out = partial + (size_t(b) * gridDim.x + blockIdx.x) * 3;
    out[0] = static_cast<float>(count);
    out[1] = mean;
    out[2] = m2;
  }
}

template <typename T>
bool pool_vec_fits(const T* x, const T* y, int64_t B, int64_t H, int64_t W, int64_t C) {
  constexpr int V = kVec<T>;
  return C % V == 0 && aligned16(x) && aligned16(y) && B * H * W * (C / V) < (int64_t(1) << 31);
}

inline bool pool_grid(int64_t B, int64_t H, int64_t W, int64_t C, dim3* grid) {
  if (W * C >= (int64_t(1) << 31) || H > 65535 || B > 65535) return false;
  *grid = dim3(static_cast<unsigned>((W * C + kBlock - 1) / kBlock), static_cast<unsigned>(H),
               static_cast<unsigned>(B));
  return true;
}

// x [B, HW, C] -> y [B, C]: block (32 channels × 8 row groups) per (channel tile, sample).
template <typename TI, typename TO>
__global__ void global_avg_pool_kernel(const TI* x, TO* y, int64_t HW, int64_t C) {
  __shared__ float part[8][33];
  const int64_t b = blockIdx.y, c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  float acc = 0.f;
  if (c < C)
    for (int64_t p = threadIdx.y; p < HW; p += 8) acc += to_f(x[(b * HW + p) * C + c]);
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float t = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) t += part[j][threadIdx.x];
    y[b * C + c] = from_f<TO>(t / static_cast<float>(HW));
  }
}

// ---- dense convolution helpers ----

template <typename T>
__global__ void im2col_kernel(const T* x, T* cols, int64_t B, int64_t H, int64_t W, int64_t C, int kh, int kw, int sh,
                              int sw, int ph, int pw, int64_t Ho, int64_t Wo) {
  const int64_t K = int64_t(kh) * kw * C, n = B * Ho * Wo * K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t col = i % K, row = i / K;
    const int64_t c = col % C, tap = col / C;
    const int kx = static_cast<int>(tap % kw), ky = static_cast<int>(tap / kw);
    const int64_t ow = row % Wo, oh = (row / Wo) % Ho, b = row / (Wo * Ho);
    const int64_t ih = oh * sh - ph + ky, iw = ow * sw - pw + kx;
    cols[i] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? x[((b * H + ih) * W + iw) * C + c] : from_f<T>(0.f);
  }
}

// The same columns read straight from an NCHW float image (the stem: no separate layout pass).
template <typename TO>
__global__ void im2col_nchw_kernel(const float* x, TO* cols, int64_t B, int64_t H, int64_t W, int64_t C, int kh, int kw,
                                   int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo) {
  const int64_t K = int64_t(kh) * kw * C, n = B * Ho * Wo * K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t col = i % K, row = i / K;
    const int64_t c = col % C, tap = col / C;
    const int kx = static_cast<int>(tap % kw), ky = static_cast<int>(tap / kw);
    const int64_t ow = row % Wo, oh = (row / Wo) % Ho, b = row / (Wo * Ho);
    const int64_t ih = oh * sh - ph + ky, iw = ow * sw - pw + kx;
    cols[i] = from_f<TO>((ih >= 0 && ih < H && iw >= 0 && iw < W) ? x[((b * C + c) * H + ih) * W + iw] : 0.f);
  }
}

// One thread per (output pixel, kernel tap): the tap's C channels are contiguous in both x and
// cols, so the index arithmetic is done once per tap instead of once per element. Rows are ldk ≥ K
// elements apart; one extra "tap" per row zero-fills the padding columns K .. ldk − 1.
template <typename T>
__global__ void im2col_taps_kernel(const T* x, T* cols, int64_t ldk, int64_t rows, int64_t H, int64_t W, int64_t C,
                                   int kh, int kw, int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo) {
  const int taps = kh * kw;
  const int64_t K = int64_t(taps) * C, n = rows * (taps + 1);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int tap = static_cast<int>(i % (taps + 1));
    const int64_t row = i / (taps + 1);
    T* out = cols + row * ldk;
    if (tap == taps) {
      for (int64_t c = K; c < ldk; ++c) out[c] = from_f<T>(0.f);
      continue;
    }
    const int kx = tap % kw, ky = tap / kw;
    const int64_t ow = row % Wo, oh = (row / Wo) % Ho, b = row / (Wo * Ho);
    const int64_t ih = oh * sh - ph + ky, iw = ow * sw - pw + kx;
    out += int64_t(tap) * C;
    if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
      const T* in = x + ((b * H + ih) * W + iw) * C;
      for (int64_t c = 0; c < C; ++c) out[c] = in[c];
    } else {
      for (int64_t c = 0; c < C; ++c) out[c] = from_f<T>(0.f);
    }
  }
}

// The same padded columns, one thread per V consecutive columns of a row (V = 8 bf16 with 16-byte
// accesses when C is a multiple of 8, so that a vector never straddles two taps; else V = 1): the
// writes of a warp are contiguous, where the kernel above had each thread copy a whole tap.
// Flat over rows × ldk / V, 32-bit (the launcher checks).
template <typename T, int V>
__global__ void im2col_cols_kernel(const T* x, T* cols, uint32_t vpr, uint32_t total, int H, int W, int C, int K,
                                   int kw, int sh, int sw, int ph, int pw, uint32_t Ho, uint32_t Wo) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const uint32_t row = i / vpr;
    const int k = static_cast<int>(i - row * vpr) * V;
    T* out = cols + size_t(i) * V;
    bool inside = false;
    const T* in = nullptr;
    if (k < K) {
      const int tap = k / C, c = k - tap * C, ky = tap / kw, kx = tap - ky * kw;
      const uint32_t ow = row % Wo, t = row / Wo, oh = t % Ho, b = t / Ho;
      const int ih = int(oh) * sh - ph + ky, iw = int(ow) * sw - pw + kx;
      inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
      in = x + ((size_t(b) * H + ih) * W + iw) * C + c;
    }
    if constexpr (V == 1) {
      *out = inside ? *in : from_f<T>(0.f);
    } else {
      uint4 u = make_uint4(0, 0, 0, 0);
      if (inside) u = *reinterpret_cast<const uint4*>(in);
      *reinterpret_cast<uint4*>(out) = u;
    }
  }
}

// The same columns where C is not a multiple of the vector (the stems: C = 3): a thread makes V
// consecutive elements of the flat [rows, ldk] array (16 bytes, one store), walking tap and
// channel by increments from one decomposition of its first index, instead of a thread an element
// with its own divisions (index arithmetic bounded the stem's im2col at about a quarter of the copy
// rate: 0.26 ms a bf16 call at batch 128, 5 % of a poolformer_s12 training step's kernel time).
// The vectors may straddle rows; the array's end, if not a whole vector, is stored element-wise.
template <typename T, int V>
__global__ void im2col_flat_kernel(const T* x, T* cols, uint32_t ldk, uint32_t n, int H, int W, int C, int K, int kw,
                                   int sh, int sw, int ph, int pw, uint32_t Ho, uint32_t Wo) {
  const uint32_t vectors = (n + V - 1) / V;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < vectors; i += gridDim.x * blockDim.x) {
    const uint32_t first = i * V;
    uint32_t row = first / ldk;
    int k = static_cast<int>(first - row * ldk);
    int tap = k / C, c = k - tap * C, ky = tap / kw, kx = tap - ky * kw;
    uint32_t ow = row % Wo, t = row / Wo, oh = t % Ho, b = t / Ho;
    alignas(16) T v[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      T val = from_f<T>(0.f);
      if (k < K) {
        const int ih = int(oh) * sh - ph + ky, iw = int(ow) * sw - pw + kx;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W) val = x[((size_t(b) * H + ih) * W + iw) * C + c];
        if (++c == C) {
          c = 0;
          if (++kx == kw) kx = 0, ++ky;
        }
      }
      v[e] = val;
      if (++k == static_cast<int>(ldk)) {  // the next row
        k = 0, c = 0, kx = 0, ky = 0;
        ++row;
        ow = row % Wo, t = row / Wo, oh = t % Ho, b = t / Ho;
      }
    }
    if (first + V <= n) {
      *reinterpret_cast<uint4*>(cols + first) = *reinterpret_cast<const uint4*>(v);
    } else {
      for (uint32_t e = 0; first + e < n; ++e) cols[first + e] = v[e];
    }
  }
}

template <typename TO>
__global__ void conv_weight_kernel(const float* w, TO* out, int64_t ldk, int64_t Co, int64_t Ci, int kh, int kw) {
  const int64_t taps = int64_t(kh) * kw, K = Ci * taps, n = Co * ldk;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    // i indexes the destination [co, j] with j = tap·Ci + ci below K, zero padding past it; the
    // source is w [co, ci, tap].
    const int64_t co = i / ldk, j = i % ldk;
    const int64_t tap = j / Ci, ci = j % Ci;
    out[i] = j < K ? from_f<TO>(w[(co * Ci + ci) * taps + tap]) : from_f<TO>(0.f);
  }
}

template <typename T>
cudaError_t pool_minus_launch(const T* x, T* y, int64_t B, int64_t H, int64_t W, int64_t C, int k, cudaStream_t s) {
  if (k < 1 || k % 2 == 0) return cudaErrorInvalidValue;
  const int64_t n = B * H * W * C;
  if (n <= 0) return cudaSuccess;
  using D = typename Dev<T>::type;
  if (pool_vec_fits(dev(x), dev(y), B, H, W, C)) {
    const int64_t total = B * H * W * (C / kVec<D>);
    const auto kernel = pool_taps_unrolled(k) ? pool_vec_kernel<3, D> : pool_vec_kernel<0, D>;
    kernel<<<grid_for(total, kBlock), kBlock, 0, s>>>(dev(x), nullptr, nullptr, nullptr, nullptr, dev(y), uint32_t(H),
                                                      uint32_t(W), uint32_t(C / kVec<D>), uint32_t(total), k, false);
    return cudaGetLastError();
  }
  dim3 grid;
  if (!pool_grid(B, H, W, C, &grid)) return cudaErrorInvalidValue;
  pool_minus_kernel<<<grid, kBlock, 0, s>>>(dev(x), dev(y), H, W, C, k);
  return cudaGetLastError();
}

template <typename T>
cudaError_t pool_branch_launch(const T* x, const float* gw, float eps, int k, const float* rs, const float* ls, T* y,
                               int64_t B, int64_t H, int64_t W, int64_t C, void* workspace, cudaStream_t s,
                               float* y_partials) {
  if (k < 1 || k % 2 == 0 || !workspace) return cudaErrorInvalidValue;
  const int64_t per = H * W * C, n = B * per;
  if (n <= 0) return cudaSuccess;
  dim3 grid;
  if (!pool_grid(B, H, W, C, &grid)) return cudaErrorInvalidValue;
  float* partial = static_cast<float*>(workspace);
  float* mean_rstd = partial + gn_partial_floats(B, per);
  const cudaError_t e = group_norm1_stats_t(x, mean_rstd, B, per, eps, partial, s);
  if (e != cudaSuccess) return e;
  using D = typename Dev<T>::type;
  if (pool_vec_fits(dev(x), dev(y), B, H, W, C) && params_aligned16({gw, rs, ls})) {
    if (y_partials && per < (int64_t(1) << 31)) {  // y's statistics as it is written: gn_partial_kernel's VEC grid
      const dim3 sgrid(static_cast<unsigned>(gn_chunks(per)), static_cast<unsigned>(B));
      const auto kernel = pool_taps_unrolled(k) ? pool_stats_kernel<3, D> : pool_stats_kernel<0, D>;
      kernel<<<sgrid, kGnThreads, 0, s>>>(dev(x), gw, mean_rstd, rs, ls, dev(y), uint32_t(H), uint32_t(W),
                                          uint32_t(C / kVec<D>), uint32_t(per), k, y_partials);
      return cudaGetLastError();
    }
    const int64_t total = B * H * W * (C / kVec<D>);
    const auto kernel = pool_taps_unrolled(k) ? pool_vec_kernel<3, D> : pool_vec_kernel<0, D>;
    kernel<<<grid_for(total, kBlock), kBlock, 0, s>>>(dev(x), gw, mean_rstd, rs, ls, dev(y), uint32_t(H), uint32_t(W),
                                                      uint32_t(C / kVec<D>), uint32_t(total), k, true);
  } else {
    pool_branch_kernel<<<grid, kBlock, 0, s>>>(dev(x), gw, mean_rstd, rs, ls, dev(y), H, W, C, k);
  }
  if (y_partials) return group_norm1_partials_t(y, B, per, y_partials, s);  // a pass over y after it
  return cudaGetLastError();
}

template <typename TI, typename TO>
cudaError_t global_avg_pool_launch(const TI* x, TO* y, int64_t B, int64_t HW, int64_t C, cudaStream_t s) {
  if (B <= 0 || C <= 0) return cudaSuccess;
  if (HW <= 0 || B > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>((C + 31) / 32), static_cast<unsigned>(B));
  global_avg_pool_kernel<<<grid, dim3(32, 8), 0, s>>>(dev(x), dev(y), HW, C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t im2col_launch(const T* x, T* cols, int64_t B, int64_t H, int64_t W, int64_t C, int kh, int kw, int sh,
                          int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s) {
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0) return cudaErrorInvalidValue;
  if ((H + 2 * ph - kh) / sh + 1 != Ho || (W + 2 * pw - kw) / sw + 1 != Wo) return cudaErrorInvalidValue;
  const int64_t n = B * Ho * Wo * kh * kw * C;
  if (n <= 0) return cudaSuccess;
  im2col_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(dev(x), dev(cols), B, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo);
  return cudaGetLastError();
}

template <typename TO>
cudaError_t im2col_nchw_launch(const float* x, TO* cols, int64_t B, int64_t H, int64_t W, int64_t C, int kh, int kw,
                               int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s) {
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0) return cudaErrorInvalidValue;
  if ((H + 2 * ph - kh) / sh + 1 != Ho || (W + 2 * pw - kw) / sw + 1 != Wo) return cudaErrorInvalidValue;
  const int64_t n = B * Ho * Wo * kh * kw * C;
  if (n <= 0) return cudaSuccess;
  im2col_nchw_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(x, dev(cols), B, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo);
  return cudaGetLastError();
}

template <typename TO>
cudaError_t conv_weight_launch(const float* w, TO* wg, int64_t ldk, int64_t Co, int64_t Ci, int kh, int kw,
                               cudaStream_t s) {
  if (ldk < Ci * kh * kw) return cudaErrorInvalidValue;
  const int64_t n = Co * ldk;
  if (n <= 0) return cudaSuccess;
  conv_weight_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(w, dev(wg), ldk, Co, Ci, kh, kw);
  return cudaGetLastError();
}

}  // namespace

bool set_depthwise_variant(const char* name) {
  return set_switch_override(depthwise_variant_override, name, kDepthwiseVariants, std::size(kDepthwiseVariants));
}

cudaError_t depthwise_weight_to_hwc(const float* w_chw, float* w_hwc, int64_t C, int kh, int kw, cudaStream_t s) {
  if (C <= 0 || kh < 1 || kw < 1) return C == 0 ? cudaSuccess : cudaErrorInvalidValue;
  dw_weight_kernel<<<grid_for(C * kh * kw, kBlock), kBlock, 0, s>>>(w_chw, w_hwc, C, kh * kw);
  return cudaGetLastError();
}

cudaError_t depthwise_conv2d(const float* x, int64_t x_stride, const float* w_hwc, const float* bias, float* y,
                             int64_t y_stride, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo,
                             int kh, int kw, int sh, int sw, int ph, int pw, Act pre_act, Act post_act,
                             cudaStream_t s) {
  return depthwise_launch(x, x_stride, w_hwc, bias, y, y_stride, B, H, W, C, Ho, Wo, kh, kw, sh, sw, ph, pw, pre_act,
                          post_act, s);
}
cudaError_t depthwise_conv2d(const bf16* x, int64_t x_stride, const float* w_hwc, const float* bias, bf16* y,
                             int64_t y_stride, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo,
                             int kh, int kw, int sh, int sw, int ph, int pw, Act pre_act, Act post_act,
                             cudaStream_t s) {
  return depthwise_launch(x, x_stride, w_hwc, bias, y, y_stride, B, H, W, C, Ho, Wo, kh, kw, sh, sw, ph, pw, pre_act,
                          post_act, s);
}

cudaError_t pool_minus_input(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, int kernel,
                             cudaStream_t s) {
  return pool_minus_launch(x, y, B, H, W, C, kernel, s);
}
cudaError_t pool_minus_input(const bf16* x, bf16* y, int64_t B, int64_t H, int64_t W, int64_t C, int kernel,
                             cudaStream_t s) {
  return pool_minus_launch(x, y, B, H, W, C, kernel, s);
}

cudaError_t pool_branch(const float* x, const float* w, const float*, float eps, int kernel, const float* res_scale,
                        const float* layer_scale, float* y, int64_t B, int64_t H, int64_t W, int64_t C,
                        void* workspace, cudaStream_t s, float* y_partials) {
  return pool_branch_launch(x, w, eps, kernel, res_scale, layer_scale, y, B, H, W, C, workspace, s, y_partials);
}
cudaError_t pool_branch(const bf16* x, const float* w, const float*, float eps, int kernel, const float* res_scale,
                        const float* layer_scale, bf16* y, int64_t B, int64_t H, int64_t W, int64_t C,
                        void* workspace, cudaStream_t s, float* y_partials) {
  return pool_branch_launch(x, w, eps, kernel, res_scale, layer_scale, y, B, H, W, C, workspace, s, y_partials);
}

cudaError_t global_avg_pool(const float* x, float* y, int64_t B, int64_t HW, int64_t C, cudaStream_t s) {
  return global_avg_pool_launch(x, y, B, HW, C, s);
}
cudaError_t global_avg_pool(const bf16* x, bf16* y, int64_t B, int64_t HW, int64_t C, cudaStream_t s) {
  return global_avg_pool_launch(x, y, B, HW, C, s);
}
cudaError_t global_avg_pool(const bf16* x, float* y, int64_t B, int64_t HW, int64_t C, cudaStream_t s) {
  return global_avg_pool_launch(x, y, B, HW, C, s);
}

cudaError_t im2col_nhwc(const float* x, float* cols, int64_t B, int64_t H, int64_t W, int64_t C, int kh, int kw,
                        int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s) {
  return im2col_launch(x, cols, B, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, s);
}
cudaError_t im2col_nhwc(const bf16* x, bf16* cols, int64_t B, int64_t H, int64_t W, int64_t C, int kh, int kw, int sh,
                        int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s) {
  return im2col_launch(x, cols, B, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, s);
}
namespace {
// im2col_nhwc_padded for either element type: V = 16 bytes of elements a thread where the channels
// allow it (8 bf16, 4 float), else one element; 32-bit indices where they fit.
template <typename T>
cudaError_t im2col_padded_launch(const T* x, T* cols, int64_t ldk, int64_t B, int64_t H, int64_t W, int64_t C, int kh,
                                 int kw, int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s) {
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || C < 1 || ldk < int64_t(kh) * kw * C)
    return cudaErrorInvalidValue;
  const int64_t rows = B * Ho * Wo;
  if (rows <= 0) return cudaSuccess;
  using D = typename Dev<T>::type;
  constexpr int V = 16 / sizeof(D);
  if (rows * ldk < (int64_t(1) << 31) && H * W * C < (int64_t(1) << 31)) {
    if (C % V == 0 && ldk % V == 0 && aligned16(x) && aligned16(cols)) {
      const int64_t total = rows * (ldk / V);
      im2col_cols_kernel<D, V><<<grid_for(total, kBlock), kBlock, 0, s>>>(
          dev(x), dev(cols), uint32_t(ldk / V), uint32_t(total), int(H), int(W), int(C), int(kh * kw * C), kw, sh, sw,
          ph, pw, uint32_t(Ho), uint32_t(Wo));
    } else if (aligned16(cols) && rows * ldk + V < (int64_t(1) << 31)) {
      const int64_t n = rows * ldk;
      im2col_flat_kernel<D, V><<<grid_for((n + V - 1) / V, kBlock), kBlock, 0, s>>>(
          dev(x), dev(cols), uint32_t(ldk), uint32_t(n), int(H), int(W), int(C), int(kh * kw * C), kw, sh, sw, ph, pw,
          uint32_t(Ho), uint32_t(Wo));
    } else {
      const int64_t total = rows * ldk;
      im2col_cols_kernel<D, 1><<<grid_for(total, kBlock), kBlock, 0, s>>>(
          dev(x), dev(cols), uint32_t(ldk), uint32_t(total), int(H), int(W), int(C), int(kh * kw * C), kw, sh, sw, ph,
          pw, uint32_t(Ho), uint32_t(Wo));
    }
    return cudaGetLastError();
  }
  im2col_taps_kernel<D><<<grid_for(rows * (kh * kw + 1), kBlock), kBlock, 0, s>>>(
      dev(x), dev(cols), ldk, rows, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo);
  return cudaGetLastError();
}
}  // namespace

cudaError_t im2col_nhwc_padded(const bf16* x, bf16* cols, int64_t ldk, int64_t B, int64_t H, int64_t W, int64_t C,
                               int kh, int kw, int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s) {
  return im2col_padded_launch(x, cols, ldk, B, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, s);
}
cudaError_t im2col_nhwc_padded(const float* x, float* cols, int64_t ldk, int64_t B, int64_t H, int64_t W, int64_t C,
                               int kh, int kw, int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s) {
  return im2col_padded_launch(x, cols, ldk, B, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, s);
}
cudaError_t im2col_nchw(const float* x, float* cols, int64_t B, int64_t C, int64_t H, int64_t W, int kh, int kw,
                        int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s) {
  return im2col_nchw_launch(x, cols, B, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, s);
}
cudaError_t im2col_nchw(const float* x, bf16* cols, int64_t B, int64_t C, int64_t H, int64_t W, int kh, int kw,
                        int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo, cudaStream_t s) {
  return im2col_nchw_launch(x, cols, B, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo, s);
}
cudaError_t conv_weight_to_gemm(const float* w, float* wg, int64_t ldk, int64_t Co, int64_t Ci, int kh, int kw,
                                cudaStream_t s) {
  return conv_weight_launch(w, wg, ldk, Co, Ci, kh, kw, s);
}
cudaError_t conv_weight_to_gemm(const float* w, bf16* wg, int64_t ldk, int64_t Co, int64_t Ci, int kh, int kw,
                                cudaStream_t s) {
  return conv_weight_launch(w, wg, ldk, Co, Ci, kh, kw, s);
}

}  // namespace mf::cuda::kernels
