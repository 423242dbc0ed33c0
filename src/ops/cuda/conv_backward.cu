// Backward kernels of the convolutions (see backward_kernels.h): the depthwise convolution's dx and
// weight gradient, and the dense convolution's helpers (the weight's layout, col2im). The reductions
// (column sums) are backward_common.cuh's: double across lanes and chunks, a fixed order, no atomics.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>

#include "ops/cuda/backward_common.cuh"
#include "ops/cuda/backward_kernels.h"

namespace mf::cuda::backward {
using namespace detail;
namespace {

// The gathers of a convolution's dx (the depthwise one's and col2im's): f(oh, ow, ki, kj) for each
// tap (ki, kj) that reads input pixel (ih, iw), i.e. whose output (ih + ph − ki) / sh,
// (iw + pw − kj) / sw is a whole number inside the output; ki outer, kj inner. I: the index type
// (int64_t, or int where the launcher has checked the sizes).
template <class I, class F>
__device__ __forceinline__ void for_each_tap_reading(I ih, I iw, I Ho, I Wo, int kh, int kw, int sh, int sw, int ph,
                                                     int pw, F f) {
  for (int ki = 0; ki < kh; ++ki) {
    const I th = ih + ph - ki;
    if (th < 0 || th % sh) continue;
    const I oh = th / sh;
    if (oh >= Ho) continue;
    for (int kj = 0; kj < kw; ++kj) {
      const I tw = iw + pw - kj;
      if (tw < 0 || tw % sw) continue;
      const I ow = tw / sw;
      if (ow >= Wo) continue;
      f(oh, ow, ki, kj);
    }
  }
}

// ---- depthwise convolution -----------------------------------------------------------------------
// dx of input pixel (n, ih, iw, c): the taps that read it, in double.
template <class T>
__global__ void depthwise_dx_kernel(const float* w, const T* dy, T* dx, int64_t total, int64_t H, int64_t W, int64_t C,
                                    int64_t Ho, int64_t Wo, int kh, int kw, int sh, int sw, int ph, int pw) {
  MF_GRID_STRIDE(at, total) {
    const int64_t c = at % C, iw = (at / C) % W, ih = (at / (C * W)) % H, n = at / (C * W * H);
    double acc = 0;
    for_each_tap_reading(ih, iw, Ho, Wo, kh, kw, sh, sw, ph, pw, [&](int64_t oh, int64_t ow, int ki, int kj) {
      acc += static_cast<double>(ld(dy[((n * Ho + oh) * Wo + ow) * C + c])) * w[(c * kh + ki) * kw + kj];
    });
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
// ldx: x's pixel stride in elements, C or more (the weight-gradient kernels read x as a channel
// slice of a wider tensor where it is one: MambaOut's conv channels inside fc1's output). dy and dx
// are always packed (C apart).
struct DwShape {
  int H, W, C, Ho, Wo, sh, sw, ph, pw, ldx;
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
        const T* xr = x + ((n * d.H + ih) * d.W) * d.ldx + c;
#pragma unroll
        for (int kj = 0; kj < KW; ++kj) {
          const int iw = iw0 + kj;
          if (iw >= 0 && iw < d.W) acc[ki * KW + kj] += g * ld(xr[iw * d.ldx]);
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
      const T* xr = x_img + ih * d.W * d.ldx;
      // win[kj] holds x at iw = ow − pw + kj; start with the window of ow = −1 (win[0] unused).
      float win[KW];
      win[0] = 0.f;
#pragma unroll
      for (int kj = 1; kj < KW; ++kj) {
        const int iw = kj - 1 - d.pw;
        win[kj] = iw >= 0 && iw < d.W ? ld(xr[iw * d.ldx]) : 0.f;
      }
      for (int ow = 0; ow < d.Wo; ++ow) {
#pragma unroll
        for (int kj = 0; kj + 1 < KW; ++kj) win[kj] = win[kj + 1];
        const int iw = ow + KW - 1 - d.pw;
        win[KW - 1] = iw >= 0 && iw < d.W ? ld(xr[iw * d.ldx]) : 0.f;
        const float g = ld(g_row[ow * d.C]);
#pragma unroll
        for (int kj = 0; kj < KW; ++kj) acc[ki * KW + kj] = fmaf(g, win[kj], acc[ki * KW + kj]);
      }
    }
  }
};

// win[j] = x at input column iw0 + j of row xr (one channel, ldx apart), zero outside the row; `interior`
// (the whole window inside the row) skips the bounds checks.
template <int N, class T>
__device__ __forceinline__ void load_row_window(float (&win)[N], const T* xr, int iw0, bool interior,
                                                const DwShape& d) {
  if (interior) {
#pragma unroll
    for (int j = 0; j < N; ++j) win[j] = ld(xr[(iw0 + j) * d.ldx]);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const int iw = iw0 + j;
      win[j] = iw >= 0 && iw < d.W ? ld(xr[iw * d.ldx]) : 0.f;
    }
  }
}

// The same row walked in blocks of OB outputs, every loop unrolled: per kernel row, the OB + KW − 1
// input values of the block are loaded into registers and all OB · KW products taken from there,
// and dy is loaded once per block instead of once per kernel row. SlidingRow shifts its window by
// KW − 1 register moves per output and kernel row, about as many instructions as its FMAs. Each tap's terms are added in the same order (rows, then ascending ow), with zero
// products for the positions past the row's end, so the sums are the same. A candidate, chosen with
// METAFORMER_CUDA_DW_DW=blocked until the device A/B has measured it (tools/device/cuda_check.sh
// candidates).
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
        float win[OB + KW - 1];
        load_row_window(win, x_img + ih * d.W * d.ldx, iw0, interior, d);
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
      Row::template add<KH, KW>(acc, x + n * d.H * d.W * d.ldx + c, dy + r * d.Wo * d.C + c, oh, d);
    }
  store_tap_partials<KH * KW>(acc, c, chunk, d.C, partial);
}

// One input row's products for a thread's RH output rows of OB columns: input row j (counted from
// the first row that feeds output row 0) feeds output row rr through kernel row j − rr; win holds its
// OB + KW − 1 values, g the outputs' gradients. Tap (ki, kj) adds g[rr][o] · win[o + kj] over o in
// ascending order.
template <int KH, int KW, int RH, int OB, int SW>
__device__ __forceinline__ void add_input_row_products(float (&acc)[KH * KW], const float (&g)[RH][OB],
                                                       const float (&win)[SW], int j) {
#pragma unroll
  for (int rr = 0; rr < RH; ++rr) {
    const int ki = j - rr;
    if (ki < 0 || ki >= KH) continue;
#pragma unroll
    for (int o = 0; o < OB; ++o)
#pragma unroll
      for (int kj = 0; kj < KW; ++kj) acc[ki * KW + kj] = fmaf(g[rr][o], win[o + kj], acc[ki * KW + kj]);
  }
}

// dw partials at stride 1 (both directions), RH consecutive output rows of one image at a time: a
// candidate (METAFORMER_CUDA_DW_DW=rows4). Both kernels above walk one output row per pass, and each
// input row is loaded by KH passes (once per output row it feeds), each value with a global load of
// its own: about 106 loads for 392 FMAs per block of 8 outputs. Here a thread takes a unit of RH
// output rows (n, oh0 … oh0 + RH − 1) in blocks of OB columns: it loads the RH · OB dy values of the
// block once, then each of the RH + KH − 1 input rows that feed them once (OB + KW − 1 values), and
// adds every product of that row into the KH · KW tap sums: for RH = 4, 172 loads for 1,568 FMAs.
// Units are n · ceil(Ho / RH) + oh0 / RH (rows past Ho are zero), one unit a lane and chunk (kRowLanes
// units a chunk); each thread sums in float (RH · Wo products a tap), the lanes and chunks in double
// as above: deterministic, a different order from the row kernels' (so not their exact bits).
template <int KH, int KW, class T, int RH>
__global__ void depthwise_dw_units_kernel(const T* x, const T* dy, int units, int chunks, DwShape d,
                                          double* partial) {
  constexpr int OB = 8, SW = OB + KW - 1;
  const int c = blockIdx.x * kColTile + threadIdx.x, chunk = blockIdx.y;
  const int per = (units + chunks - 1) / chunks, u0 = chunk * per, u1 = u0 + per < units ? u0 + per : units;
  const int row_units = (d.Ho + RH - 1) / RH;
  float acc[KH * KW];
#pragma unroll
  for (int t = 0; t < KH * KW; ++t) acc[t] = 0;
  if (c < d.C)
    for (int u = u0 + threadIdx.y; u < u1; u += kRowLanes) {
      const int n = u / row_units, oh0 = (u % row_units) * RH;
      const T* x_img = x + n * d.H * d.W * d.ldx + c;
      const T* g_img = dy + n * d.Ho * d.Wo * d.C + c;
      for (int ow0 = 0; ow0 < d.Wo; ow0 += OB) {
        float g[RH][OB];
#pragma unroll
        for (int rr = 0; rr < RH; ++rr)
#pragma unroll
          for (int o = 0; o < OB; ++o)
            g[rr][o] = oh0 + rr < d.Ho && ow0 + o < d.Wo ? ld(g_img[((oh0 + rr) * d.Wo + ow0 + o) * d.C]) : 0.f;
        const int iw0 = ow0 - d.pw;
        const bool interior = iw0 >= 0 && iw0 + SW <= d.W;
#pragma unroll
        for (int j = 0; j < RH + KH - 1; ++j) {  // input row ih = oh0 − ph + j feeds output row rr by tap j − rr
          const int ih = oh0 - d.ph + j;
          if (ih < 0 || ih >= d.H) continue;
          float win[SW];
          load_row_window(win, x_img + ih * d.W * d.ldx, iw0, interior, d);
          add_input_row_products<KH, KW>(acc, g, win, j);
        }
      }
    }
  store_tap_partials<KH * KW>(acc, c, chunk, d.C, partial);
}

// The tiled kernel's staging: a thread's loaded 16-byte vectors (raw[it] is vector tid + it · NT of the
// N, kColTile / kVec<T> of them a pixel) as floats into dst, kColTile floats a pixel. PRE: an input
// activation's kind fixed at compile time (kernels::act_static; Identity: none), applied to the loads
// inside the map (bit it of `inside`) only, so the padding stays zero (StarReLU's act(0) is its bias).
template <class T, int N, int NT, int PRE = 0, int NI>
__device__ __forceinline__ void store_loaded_vectors(const uint4 (&raw)[NI], float* dst, int tid, unsigned inside = 0,
                                                     const kernels::Act& act = {}) {
  constexpr int V = kVec<T>, G = kColTile / V;
#pragma unroll
  for (int it = 0; it < NI; ++it) {
    const int i = tid + it * NT;
    if (i < N) {
      float v[V];
      unpack16<T>(raw[it], v);
      if constexpr (PRE != static_cast<int>(kernels::ActKind::Identity)) {
        if ((inside >> it) & 1u) {
#pragma unroll
          for (int e = 0; e < V; ++e) v[e] = kernels::act_static<PRE>(act, v[e]);
        }
      }
      float4* d = reinterpret_cast<float4*>(dst + (i / G) * kColTile + (i % G) * V);
#pragma unroll
      for (int e = 0; e < V; e += 4) d[e / 4] = make_float4(v[e], v[e + 1], v[e + 2], v[e + 3]);
    }
  }
}

constexpr int kDwTileRows = 2 * kRowLanes, kDwTileCols = 8;
constexpr size_t dw_tiled_smem_bytes(int K) {
  return sizeof(float) * kColTile * ((kDwTileRows + K - 1) * (kDwTileCols + K - 1) + kDwTileRows * kDwTileCols);
}

// dW partials from tiles staged in shared memory (the default where it applies: stride 1,
// square K, 16-byte vectors of channels). The units kernel above does the same 784 FMAs a thread per
// unit, but loads each input row's window from global memory just before its FMAs: Nsight Compute
// (H100, 2026-12-05) found it issuing an instruction every 9 cycles a warp, a third of them spent
// waiting on those loads, at 128 registers (25 % occupancy). Here a block of 32 channels and 8 lanes
// takes a tile of TH = 16 output rows (two a lane) by TW = 8 columns: every thread first issues its
// 16-byte loads of the tile's input patch (SH × SW pixels) and of dy (TH × TW), all of them before
// any is used, as the forward's batched staging does; then converts them into shared memory, and
// computes from there (each value read by the 32 channels' threads of a warp: no bank conflicts).
// A chunk is a run of consecutive tiles; each thread sums in float, the lanes and chunks in double,
// in a fixed order: deterministic, in another order than the units kernel (so not its bits).
// PRE (not Identity): the weight gradient of depthwise(act(x)) with x the pre-activation, act applied
// in float as the staging converts x (as the forward kernel applies it), so act(x) is never written.
template <int K, class T, int PRE = 0>
__global__ void __launch_bounds__(kColTile* kRowLanes, 2)
    depthwise_dw_tiled_kernel(const T* x, const T* dy, int B, int chunks, DwShape d, double* partial,
                              kernels::Act pre_act) {
  constexpr int RH = 2, TH = kDwTileRows, TW = kDwTileCols, SH = TH + K - 1, SW = TW + K - 1;
  constexpr int V = kVec<T>, G = kColTile / V, NT = kColTile * kRowLanes;
  constexpr int NX = SH * SW * G, ND = TH * TW * G, IX = (NX + NT - 1) / NT, ID = (ND + NT - 1) / NT;
  static_assert(IX <= 32, "one bit a load of the input patch");
  constexpr bool kPre = PRE != static_cast<int>(kernels::ActKind::Identity);
  // StarReLU's device scalars read once a thread, not once a value.
  const kernels::Act act = kPre ? kernels::act_resolved(pre_act) : kernels::Act{};
  extern __shared__ float4 dw_tiles_smem[];  // dynamic: 55 KB at 7×7 (dw_tiled_smem_bytes)
  float* xs = reinterpret_cast<float*>(dw_tiles_smem);  // [SH · SW pixels][32 channels]
  float* gs = xs + SH * SW * kColTile;                  // [TH · TW pixels][32 channels]
  const int tid = threadIdx.y * kColTile + threadIdx.x, c0 = blockIdx.x * kColTile, chunk = blockIdx.y;
  const int tiles_h = (d.Ho + TH - 1) / TH, tiles_w = (d.Wo + TW - 1) / TW, tiles = tiles_h * tiles_w;
  const int units = B * tiles, per = (units + chunks - 1) / chunks, u0 = chunk * per;
  const int u1 = u0 + per < units ? u0 + per : units;
  float acc[K * K];
#pragma unroll
  for (int t = 0; t < K * K; ++t) acc[t] = 0;
  for (int u = u0; u < u1; ++u) {
    const int n = u / tiles, oh0 = (u % tiles) / tiles_w * TH, ow0 = (u % tiles) % tiles_w * TW;
    const int ih0 = oh0 - d.ph, iw0 = ow0 - d.pw;
    uint4 rx[IX], rd[ID];
    unsigned inside = 0;  // which of rx are the map's (the rest are the zero padding), for PRE
#pragma unroll
    for (int it = 0; it < IX; ++it) {
      const int i = tid + it * NT, g = i % G, p = i / G, ih = ih0 + p / SW, iw = iw0 + p % SW, c = c0 + g * V;
      rx[it] = make_uint4(0, 0, 0, 0);
      if (i < NX && c < d.C && ih >= 0 && ih < d.H && iw >= 0 && iw < d.W) {
        rx[it] = *reinterpret_cast<const uint4*>(x + ((static_cast<int64_t>(n) * d.H + ih) * d.W + iw) * d.ldx + c);
        if constexpr (kPre) inside |= 1u << it;
      }
    }
#pragma unroll
    for (int it = 0; it < ID; ++it) {
      const int i = tid + it * NT, g = i % G, p = i / G, oh = oh0 + p / TW, ow = ow0 + p % TW, c = c0 + g * V;
      rd[it] = make_uint4(0, 0, 0, 0);
      if (i < ND && c < d.C && oh < d.Ho && ow < d.Wo)
        rd[it] = *reinterpret_cast<const uint4*>(dy + ((static_cast<int64_t>(n) * d.Ho + oh) * d.Wo + ow) * d.C + c);
    }
    __syncthreads();  // the previous tile's reads of xs and gs are done
    store_loaded_vectors<T, NX, NT, PRE>(rx, xs, tid, inside, act);
    store_loaded_vectors<T, ND, NT>(rd, gs, tid);
    __syncthreads();
    const int c = threadIdx.x, r0 = threadIdx.y * RH;
    if (oh0 + r0 >= d.Ho) continue;  // this lane's rows are past the map (its gs rows are zero anyway)
    float g[RH][TW];
#pragma unroll
    for (int rr = 0; rr < RH; ++rr)
#pragma unroll
      for (int o = 0; o < TW; ++o) g[rr][o] = gs[((r0 + rr) * TW + o) * kColTile + c];
#pragma unroll
    for (int j = 0; j < RH + K - 1; ++j) {  // staged input row r0 + j feeds output row rr by tap j − rr
      float win[SW];
#pragma unroll
      for (int q = 0; q < SW; ++q) win[q] = xs[((r0 + j) * SW + q) * kColTile + c];
      add_input_row_products<K, K>(acc, g, win, j);
    }
  }
  store_tap_partials<K * K>(acc, c0 + threadIdx.x, chunk, d.C, partial);
}

// Which dW kernel at stride 1: tiles staged in shared memory (depthwise_dw_tiled_kernel: bf16, square
// kernels with 16-byte channel vectors, maps of 14 rows or more), the default since the H100 A/B of
// 2026-12-05 (cuda_check.sh dwdwtiled: 4.4 against 9.5 ms of two convformer_s18 steps' dW kernels,
// training 6 % faster; docs/cuda-log.md); where it does not apply, two output rows a thread
// (depthwise_dw_units_kernel, RH = 2; 128 registers at 7×7, ptxas sm_90: two blocks of 256 threads an
// SM), the default before it. Another: METAFORMER_CUDA_DW_DW=rows2 (the units kernel everywhere),
// window (the sliding window, the default before rows2), blocked (BlockedRow) or rows4 (RH = 4, 160
// registers). rows2, rows4 and tiled add each tap's terms in other orders than the window kernels
// and than each other: deterministic, but not the same bits.
constexpr const char* kDwGradVariants[] = {"window", "blocked", "rows4", "rows2", "tiled"};
constexpr int kDwGradDefault = 4;  // tiled
std::atomic<int> dw_grad_variant_override{-1};  // set_depthwise_weight_grad_variant (bench/cuda_dev)
int dw_weight_grad_variant() {
  static const int from_env = [] {
    const int v = env_choice("METAFORMER_CUDA_DW_DW", kDwGradVariants, std::size(kDwGradVariants));
    return v < 0 ? kDwGradDefault : v;  // the index is the variant
  }();
  const int o = dw_grad_variant_override.load(std::memory_order_relaxed);
  return o >= 0 ? o : from_env;
}

// dw[c, tap] += Σ over the chunks, in order, one thread a weight (METAFORMER_CUDA_DW_FINISH=serial, the
// default until 2026-12-07):
// 49 · C threads, each adding up to 1,024 chunks alone, averaged 19 µs a launch in mambaout_femto's
// training on an H100 (36 launches, 2.1 % of its kernel time, C = 48 – 288: 10 – 55 blocks).
__global__ void depthwise_dw_finish_kernel(const double* partial, float* dw, int chunks, int taps, int C) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < taps * C; i += gridDim.x * blockDim.x) {
    const int tap = i / C, c = i % C;
    double s = 0;
    for (int k = 0; k < chunks; ++k) s += partial[(static_cast<int64_t>(k) * taps + tap) * C + c];
    dw[c * taps + tap] += static_cast<float>(s);
  }
}

// The partials' layout, [chunk][tap][c], is the column sums' [chunk][column] with taps · C columns, so
// the column sums' finish kernel (32 lanes a column, each over every 32nd chunk, then the lanes in
// order: 32 times the threads, a 32nd of the chain each) adds them; this stores column tap · C + c.
struct DwTapStore {
  float* dw;
  int taps, C;
  __device__ void store(int64_t col, const double* s) const {
    const int64_t tap = col / C, c = col % C;
    dw[c * taps + tap] += static_cast<float>(s[0]);
  }
};

// METAFORMER_CUDA_DW_FINISH: `lanes` (the default since 2026-12-07: +0.3 % mambaout_femto training on
// an H100) or `serial`, read on each call so that a test can run both. Either order is fixed
// (deterministic); the bits differ between them.
bool dw_finish_serial() { return env_choice("METAFORMER_CUDA_DW_FINISH", {"serial", "lanes"}) == 0; }

void depthwise_dw_finish(const double* work, float* dw, int chunks, int taps, int C, cudaStream_t s) {
  const int64_t cols = static_cast<int64_t>(taps) * C;
  if (dw_finish_serial())
    depthwise_dw_finish_kernel<<<blocks_for(cols), kThreads, 0, s>>>(work, dw, chunks, taps, C);
  else
    column_finish_kernel<1><<<blocks_for(cols, kColTile), dim3(kColTile, kFinishLanes), 0, s>>>(DwTapStore{dw, taps, C},
                                                                                               cols, chunks, work);
}

// The tiled dW kernel where the variant is tiled (the default) and it applies: bf16 (fp32's
// 16-byte vectors hold half the channels, and its loads in flight spilled 200 bytes at 7×7, ptxas
// 11.8), a square kernel at stride 1, channels in 16-byte vectors, maps of 14 rows or more. Lowers
// chunks to the tiles' count; false, with nothing launched, where it does not apply. PRE, pre_act:
// the input activation (depthwise_dw_tiled_kernel).
template <int KH, int KW, class T, int PRE = 0>
bool launch_dw_tiled(const T* x, const T* dy, int B, const DwShape& d, int& chunks, double* work, cudaStream_t s,
                     const kernels::Act& pre_act = {}) {
  if constexpr (sizeof(T) != 2 || KH != KW) {
    return false;
  } else {
    const bool vec = d.C % kVec<T> == 0 && d.ldx % kVec<T> == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(dy) % 16 == 0;
    if (dw_weight_grad_variant() != 4 || d.sh != 1 || d.sw != 1 || !vec || d.Ho < 14) return false;
    // Tiles of 16 × 8 outputs, 8 tiles a chunk (the work holds column_chunks(rows) chunks).
    const int tiles = ((d.Ho + kDwTileRows - 1) / kDwTileRows) * ((d.Wo + kDwTileCols - 1) / kDwTileCols);
    const int want = (B * tiles + 7) / 8;
    chunks = want < chunks ? want : chunks;
    const dim3 grid(static_cast<unsigned>((d.C + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
    static size_t allowed = 0;  // one per instantiation, as each kernel's attribute is its own
    constexpr size_t bytes = dw_tiled_smem_bytes(KH);
    // A refused shared-memory size launches nothing; the op reports it (the caller's cudaGetLastError).
    if (kernels::allow_dynamic_shared(depthwise_dw_tiled_kernel<KH, T, PRE>, bytes, allowed) == cudaSuccess)
      depthwise_dw_tiled_kernel<KH, T, PRE>
          <<<grid, dim3(kColTile, kRowLanes), bytes, s>>>(x, dy, B, chunks, d, work, pre_act);
    return true;
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
    if (launch_dw_tiled<KH, KW>(x, dy, B, d, chunks, work, s)) {
      // the tiled kernel (the default), where it applies
    } else if (d.sh == 1 && d.sw == 1 && dw_weight_grad_variant() >= 2) {  // one unit of RH output rows a lane
      const int rh = dw_weight_grad_variant() == 2 ? 4 : 2;
      const int units = B * ((d.Ho + rh - 1) / rh), want = (units + kRowLanes - 1) / kRowLanes;
      chunks = want < chunks ? want : chunks;
      const dim3 grid(static_cast<unsigned>((d.C + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
      if (rh == 4)
        depthwise_dw_units_kernel<KH, KW, T, 4><<<grid, block, 0, s>>>(x, dy, units, chunks, d, work);
      else
        depthwise_dw_units_kernel<KH, KW, T, 2><<<grid, block, 0, s>>>(x, dy, units, chunks, d, work);
    } else if (d.sw == 1) {  // 16 image rows a chunk, 2 a lane
      const int img_rows = B * d.Ho, want = (img_rows + 15) / 16;
      chunks = want < chunks ? want : chunks;
      // (Two bf16 channels a thread with 4-byte loads was tried on the H200 and was slower: 24.5
      // against 19.0 ms in two convformer_s18 steps, with twice the accumulators; docs/cuda.md.)
      const dim3 grid(static_cast<unsigned>((d.C + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
      if (dw_weight_grad_variant() == 1)
        depthwise_dw_rows_kernel<KH, KW, T, BlockedRow><<<grid, block, 0, s>>>(x, dy, img_rows, chunks, d, work);
      else
        depthwise_dw_rows_kernel<KH, KW, T, SlidingRow><<<grid, block, 0, s>>>(x, dy, img_rows, chunks, d, work);
    } else {
      const dim3 grid(static_cast<unsigned>((d.C + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
      depthwise_dw_fixed_kernel<KH, KW, T><<<grid, block, 0, s>>>(x, dy, rows, chunks, d, work);
    }
    depthwise_dw_finish(work, dw, chunks, KH * KW, d.C, s);
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
__global__ void conv_weight_grad_add_kernel(const float* dwk, int64_t ldk, float* dw, int64_t total, int64_t Ci, int kh,
                                            int kw) {
  MF_GRID_STRIDE(i, total) {
    const int64_t kx = i % kw, ky = (i / kw) % kh, ci = (i / (kw * kh)) % Ci, co = i / (kw * kh * Ci);
    dw[i] += dwk[co * ldk + (ky * kw + kx) * Ci + ci];
  }
}

template <class T>
__global__ void col2im_kernel(const T* dcols, T* dx, int64_t total, int64_t H, int64_t W, int64_t C, int kh, int kw,
                              int sh, int sw, int ph, int pw, int64_t Ho, int64_t Wo) {
  const int64_t K = static_cast<int64_t>(kh) * kw * C;
  MF_GRID_STRIDE(at, total) {
    const int64_t c = at % C, iw = (at / C) % W, ih = (at / (C * W)) % H, n = at / (C * W * H);
    double acc = 0;
    for_each_tap_reading(ih, iw, Ho, Wo, kh, kw, sh, sw, ph, pw, [&](int64_t oh, int64_t ow, int ky, int kx) {
      acc += ld(dcols[((n * Ho + oh) * Wo + ow) * K + (static_cast<int64_t>(ky) * kw + kx) * C + c]);
    });
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
    for_each_tap_reading(ih, iw, Ho, Wo, kh, kw, sh, sw, ph, pw, [&](int oh, int ow, int ky, int kx) {
      // dcols row (n, oh, ow), column (ky, kx, c): K is a multiple of V when C is.
      float v[V];
      load_v<T, V>(dcols + static_cast<int64_t>((n * Ho + oh) * Wo + ow) * K + (ky * kw + kx) * C + cv * V, v);
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] += v[e];
    });
    store_v<T, V>(dx + static_cast<int64_t>(at) * V, acc);
  }
}
}  // namespace

bool set_depthwise_weight_grad_variant(const char* name) {
  return set_switch_override(dw_grad_variant_override, name, kDwGradVariants, std::size(kDwGradVariants));
}

int64_t depthwise_backward_work(int64_t B, int64_t Ho, int64_t Wo, int64_t C, int kh, int kw) {
  return column_work(B * Ho * Wo, static_cast<int64_t>(kh) * kw * C, 1);  // ≥ the bias's C columns
}

template <class H_>
cudaError_t depthwise_conv2d_backward(const H_* xh, const float* w, const H_* dyh, H_* dxh, float* dw, float* db,
                                      int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, int kh, int kw,
                                      int sh, int sw, int ph, int pw, double* work, cudaStream_t s, int64_t ldx) {
  using T = typename DevT<H_>::type;
  const T *x = dptr(xh), *dy = dptr(dyh);
  T* dx = dptr(dxh);
  const int64_t total = B * H * W * C, lx = ldx > 0 ? ldx : C;
  const bool fits_int = total < (int64_t{1} << 31) && B * Ho * Wo * C < (int64_t{1} << 31) &&
                        B * H * W * lx < (int64_t{1} << 31);
  const DwShape d{static_cast<int>(H), static_cast<int>(W), static_cast<int>(C), static_cast<int>(Ho),
                  static_cast<int>(Wo), sh, sw, ph, pw, static_cast<int>(lx)};
  if (lx < C) return cudaErrorInvalidValue;
  if (fits_int && kh == kw && (kh == 3 || kh == 5 || kh == 7)) {
    const int b = static_cast<int>(B);
    if (kh == 3) depthwise_backward_fixed<3, 3>(x, w, dy, dx, dw, b, d, work, s);
    if (kh == 5) depthwise_backward_fixed<5, 5>(x, w, dy, dx, dw, b, d, work, s);
    if (kh == 7) depthwise_backward_fixed<7, 7>(x, w, dy, dx, dw, b, d, work, s);
    if (db) column_sums<1>(ColumnSum<T>{dy, db, C}, B * Ho * Wo, C, work, s);  // after dw's finish: work is free
    return cudaGetLastError();
  }
  if (lx != C) return cudaErrorInvalidValue;  // a strided x: the fixed kernels' only
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
                                               int, int, double*, cudaStream_t, int64_t);
template cudaError_t depthwise_conv2d_backward(const bf16*, const float*, const bf16*, bf16*, float*, float*, int64_t,
                                               int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int,
                                               int, double*, cudaStream_t, int64_t);

namespace {
// The weight gradient of depthwise(act(x)) by the tiled kernel with act applied in its staging, for
// the kinds fixed at compile time (StarReLU, ConvFormer's; GELU); false, with nothing launched, where
// the kernel or the kind does not apply.
template <int K, class T>
bool act_dw_grad_tiled(const T* x, const kernels::Act& act, const T* dy, float* dw, int B, const DwShape& d,
                       double* work, cudaStream_t s) {
  constexpr int kStar = static_cast<int>(kernels::ActKind::StarReLU), kGelu = static_cast<int>(kernels::ActKind::GELU);
  int chunks = static_cast<int>(column_chunks(static_cast<int64_t>(B) * d.Ho * d.Wo));
  bool launched = false;
  if (act.kind == kernels::ActKind::StarReLU)
    launched = launch_dw_tiled<K, K, T, kStar>(x, dy, B, d, chunks, work, s, act);
  else if (act.kind == kernels::ActKind::GELU)
    launched = launch_dw_tiled<K, K, T, kGelu>(x, dy, B, d, chunks, work, s, act);
  if (!launched) return false;
  depthwise_dw_finish(work, dw, chunks, K * K, d.C, s);
  return true;
}
}  // namespace

template <class H_>
cudaError_t act_depthwise_weight_grad(const H_* xh, Act act, const H_* dyh, float* dw, int64_t B, int64_t H, int64_t W,
                                      int64_t C, int64_t Ho, int64_t Wo, int kh, int kw, int sh, int sw, int ph, int pw,
                                      double* work, cudaStream_t s, bool& done) {
  using T = typename DevT<H_>::type;
  done = false;
  const T *x = dptr(xh), *dy = dptr(dyh);
  const bool fits_int = B * H * W * C < (int64_t{1} << 31) && B * Ho * Wo * C < (int64_t{1} << 31);
  if (!dw || !fits_int || kh != kw || B * Ho * Wo <= 0) return cudaGetLastError();
  const DwShape d{static_cast<int>(H), static_cast<int>(W), static_cast<int>(C), static_cast<int>(Ho),
                  static_cast<int>(Wo), sh, sw, ph, pw, static_cast<int>(C)};
  const kernels::Act a{static_cast<kernels::ActKind>(act.kind), act.scale, act.bias, act.threshold, act.scale_p,
                       act.bias_p};
  const int b = static_cast<int>(B);
  if (kh == 3) done = act_dw_grad_tiled<3>(x, a, dy, dw, b, d, work, s);
  if (kh == 5) done = act_dw_grad_tiled<5>(x, a, dy, dw, b, d, work, s);
  if (kh == 7) done = act_dw_grad_tiled<7>(x, a, dy, dw, b, d, work, s);
  return cudaGetLastError();
}
template cudaError_t act_depthwise_weight_grad(const float*, Act, const float*, float*, int64_t, int64_t, int64_t,
                                               int64_t, int64_t, int64_t, int, int, int, int, int, int, double*,
                                               cudaStream_t, bool&);
template cudaError_t act_depthwise_weight_grad(const bf16*, Act, const bf16*, float*, int64_t, int64_t, int64_t,
                                               int64_t, int64_t, int64_t, int, int, int, int, int, int, double*,
                                               cudaStream_t, bool&);

cudaError_t depthwise_weight_flip_hwc(const float* w, float* flipped, int64_t C, int kh, int kw, cudaStream_t s) {
  const int64_t total = C * kh * kw;
  if (total > 0) depthwise_weight_flip_hwc_kernel<<<blocks_for(total), kThreads, 0, s>>>(w, flipped, total, C, kh, kw);
  return cudaGetLastError();
}

cudaError_t conv_weight_grad_add(const float* dwk, int64_t ldk, float* dw, int64_t Co, int64_t Ci, int kh, int kw,
                                 cudaStream_t s) {
  const int64_t total = Co * Ci * kh * kw;
  if (ldk < Ci * kh * kw) return cudaErrorInvalidValue;
  if (total > 0) conv_weight_grad_add_kernel<<<blocks_for(total), kThreads, 0, s>>>(dwk, ldk, dw, total, Ci, kh, kw);
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

}  // namespace mf::cuda::backward
