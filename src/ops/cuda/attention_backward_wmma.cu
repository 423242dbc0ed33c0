// Attention's backward pass in bf16 on the tensor cores, one block per (sample, head), nothing N×N in
// global memory, in two kernels: the lock-step one first (METAFORMER_CUDA_ATTN_BWD=wmma; the default
// from the H200 A/B of 2026-12-05 until the key-tile one below, the default since the H100 A/B of the
// same day, tools/device/cuda_check.sh attntiles, until attention_backward_mma.cu's; still the one
// for head size 64). METAFORMER_CUDA_ATTN_BWD=gemm runs cuBLASLt's.
//
// Why: the GEMM version (cuda_backward.cpp, attention_backward_gemm) runs the five products through
// cuBLASLt one head at a time. At CAFormer's sizes (196 or 49 tokens, head size 32) each is a batch of
// tiny matrices that cuBLASLt tiles 32×32, and with the softmax rows and their workspace in between
// they took about 8 ms of a 54 ms caformer_s18 bf16 training step on the H200, for about 0.4 ms of
// tensor-core work.
//
// The block keeps the head's q, k, v and dO (N × d, bf16, rows padded to Np, a multiple of 16, with
// zeros) in shared memory and walks the query rows in blocks of 16:
//   1. S = Q_blk·Kᵀ and dP = dO_blk·Vᵀ (16 × Np, fp32 in shared memory);
//   2. the softmax rows, in fp32: P = softmax(scale · S) over the N real keys, D = Σ_j P ⊙ dP, and
//      dS = scale · P ⊙ (dP − D); P and dS rounded to bf16 once (as the default's softmax kernel and
//      flash attention do) for the products that read them;
//   3. dQ_blk = dS·K (written out), dV += Pᵀ·dO_blk and dK += dSᵀ·Q_blk (fp32 accumulators in the
//      warps' registers across the row blocks, written out at the end).
// Every product accumulates in fp32 through WMMA 16×16×16 tiles, in a fixed order; the softmax sums
// are float butterflies: deterministic, without atomics, like every backward pass of the backend.
// Padded query rows have P = dS = 0 and padded keys P = 0, so they add nothing.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "ops/cuda/attention_rows.cuh"
#include "ops/cuda/backward_kernels.h"
#include "ops/cuda/kernels/common.cuh"

namespace mf::cuda::backward {
namespace {

using namespace nvcuda;
using bf = __nv_bfloat16;

// 16 warps: each owns few dK and dV tiles, so their fp32 accumulators stay in registers (8 warps
// owning up to 5 tiles each took 158 registers a thread, ptxas sm_90: one block of 8 warps an SM),
// and the 16 softmax rows of a row block are one a warp.
constexpr int kWarps = 16, kTile = 16;
// The dK and dV tiles a warp owns (tile t of (Np / 16) · (d / 16) goes to warp t % 16): at most
// 16 · kMaxOwned tiles each, so Np · d ≤ 256 · 16 · kMaxOwned.
constexpr int kMaxOwned = 3;
constexpr int kMaxKeysPerLane = 9;  // Np ≤ 288: the softmax rows' values a lane keeps

using FragA = wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, bf, wmma::row_major>;
using FragAt = wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, bf, wmma::col_major>;  // a transposed
using FragB = wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, bf, wmma::row_major>;
using FragBt = wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, bf, wmma::col_major>;  // b transposed
using FragC = wmma::fragment<wmma::accumulator, kTile, kTile, kTile, float>;

__device__ __forceinline__ float warp_max_f(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum_f(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// A 16×16 fp32 tile (in the warp's staging area) to rows of bf16 in global memory: lane l writes 8
// values of row l / 2, the rows at or past `valid` skipped; `to` is row 0's first element, rows
// `stride` elements apart.
__device__ __forceinline__ void write_tile(const float* stage, bf* to, int64_t stride, int valid, int lane) {
  const int r = lane >> 1, c0 = (lane & 1) * 8;
  if (r >= valid) return;
  __align__(16) bf out[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) out[e] = __float2bfloat16(stage[r * kTile + c0 + e]);
  *reinterpret_cast<uint4*>(to + r * stride + c0) = *reinterpret_cast<const uint4*>(out);
}

// The head's q, k, v (from qkv, [B, N, 3, heads, HD]) and dO (dy, [B, N, heads, HD]) of sample b into
// shared memory as Np rows each, `stride` elements apart, the rows past N zero; 16 bytes a thread.
template <int HD>
__device__ __forceinline__ void stage_head(const bf* qkv, const bf* dy, int b, int h, int heads, int N, int Np,
                                           int stride, bf* Qs, bf* Ks, bf* Vs, bf* Gs) {
  const int64_t A = static_cast<int64_t>(heads) * HD, tok = 3 * A;
  const bf* base = qkv + static_cast<int64_t>(b) * N * tok + h * HD;
  const bf* gbase = dy + static_cast<int64_t>(b) * N * A + h * HD;
  constexpr int V8 = HD / 8;  // 16-byte vectors a row
  for (int idx = threadIdx.x; idx < Np * V8; idx += blockDim.x) {
    const int i = idx / V8, v = idx % V8;
    uint4 q = make_uint4(0, 0, 0, 0), k = q, vv = q, g = q;
    if (i < N) {
      const bf* t = base + i * tok + v * 8;
      q = *reinterpret_cast<const uint4*>(t);
      k = *reinterpret_cast<const uint4*>(t + A);
      vv = *reinterpret_cast<const uint4*>(t + 2 * A);
      g = *reinterpret_cast<const uint4*>(gbase + i * A + v * 8);
    }
    const int at = i * stride + v * 8;
    *reinterpret_cast<uint4*>(Qs + at) = q;
    *reinterpret_cast<uint4*>(Ks + at) = k;
    *reinterpret_cast<uint4*>(Vs + at) = vv;
    *reinterpret_cast<uint4*>(Gs + at) = g;
  }
}

template <int HD>
__global__ void __launch_bounds__(kWarps * 32)
    attention_backward_wmma_kernel(const bf* qkv, const bf* dy, bf* dqkv, int N, int Np, int heads, float scale) {
  constexpr int DT = HD / kTile;  // column tiles of a head
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ __align__(32) float stage[kWarps][kTile * kTile];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int h = blockIdx.x % heads, b = blockIdx.x / heads;
  const int64_t A = static_cast<int64_t>(heads) * HD, tok = 3 * A;
  bf* Qs = reinterpret_cast<bf*>(smem);  // [Np][HD] each
  bf* Ks = Qs + Np * HD;
  bf* Vs = Ks + Np * HD;
  bf* Gs = Vs + Np * HD;                         // dO
  float* Sf = reinterpret_cast<float*>(Gs + Np * HD);  // [16][Np]
  float* Df = Sf + kTile * Np;                   // dP, [16][Np]
  bf* Pb = reinterpret_cast<bf*>(Df + kTile * Np);  // [16][Np]
  bf* dSb = Pb + kTile * Np;                     // [16][Np]

  stage_head<HD>(qkv, dy, b, h, heads, N, Np, HD, Qs, Ks, Vs, Gs);

  const int KT = Np / kTile;  // key (and query) tiles
  const int owned_total = KT * DT;
  FragC dK[kMaxOwned], dV[kMaxOwned];
#pragma unroll
  for (int o = 0; o < kMaxOwned; ++o) {
    wmma::fill_fragment(dK[o], 0.f);
    wmma::fill_fragment(dV[o], 0.f);
  }
  __syncthreads();

  for (int rb = 0; rb < KT; ++rb) {
    // 1. S and dP of the row block: 2 · KT tiles over the warps.
    for (int job = warp; job < 2 * KT; job += kWarps) {
      const bool scores = job < KT;
      const int t = scores ? job : job - KT;
      const bf* left = (scores ? Qs : Gs) + rb * kTile * HD;
      const bf* right = (scores ? Ks : Vs) + t * kTile * HD;
      FragC acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < DT; ++kk) {
        FragA a;
        FragBt bt;  // Kᵀ / Vᵀ: row-major K read as column-major
        wmma::load_matrix_sync(a, left + kk * kTile, HD);
        wmma::load_matrix_sync(bt, right + kk * kTile, HD);
        wmma::mma_sync(acc, a, bt, acc);
      }
      wmma::store_matrix_sync((scores ? Sf : Df) + t * kTile, acc, Np, wmma::mem_row_major);
    }
    __syncthreads();

    // 2. The softmax rows: one a warp, the lanes over the keys.
    for (int ii = warp; ii < kTile; ii += kWarps) {
      const int i = rb * kTile + ii;
      float s[kMaxKeysPerLane], p[kMaxKeysPerLane];
      float m = -INFINITY;
#pragma unroll
      for (int e = 0; e < kMaxKeysPerLane; ++e) {
        const int j = lane + 32 * e;
        s[e] = j < N && i < N ? Sf[ii * Np + j] * scale : -INFINITY;
        m = fmaxf(m, s[e]);
      }
      m = warp_max_f(m);
      float l = 0.f;
#pragma unroll
      for (int e = 0; e < kMaxKeysPerLane; ++e) {
        p[e] = s[e] == -INFINITY ? 0.f : expf(s[e] - m);
        l += p[e];
      }
      l = warp_sum_f(l);
      const float inv_l = l > 0.f ? 1.f / l : 0.f;  // 0 on a padded query row (every s is −∞)
      float D = 0.f;
#pragma unroll
      for (int e = 0; e < kMaxKeysPerLane; ++e) {
        const int j = lane + 32 * e;
        p[e] *= inv_l;
        if (j < Np) D = fmaf(p[e], Df[ii * Np + j], D);
      }
      D = warp_sum_f(D);
#pragma unroll
      for (int e = 0; e < kMaxKeysPerLane; ++e) {
        const int j = lane + 32 * e;
        if (j < Np) {
          Pb[ii * Np + j] = __float2bfloat16(p[e]);
          dSb[ii * Np + j] = __float2bfloat16(scale * p[e] * (Df[ii * Np + j] - D));
        }
      }
    }
    __syncthreads();

    // 3a. dQ of the row block: DT tiles, each over the KT key tiles (warps 0 … DT − 1).
    if (warp < DT) {
      FragC acc;
      wmma::fill_fragment(acc, 0.f);
      for (int kt = 0; kt < KT; ++kt) {
        FragA a;
        FragB bm;
        wmma::load_matrix_sync(a, dSb + kt * kTile, Np);
        wmma::load_matrix_sync(bm, Ks + kt * kTile * HD + warp * kTile, HD);
        wmma::mma_sync(acc, a, bm, acc);
      }
      wmma::store_matrix_sync(stage[warp], acc, kTile, wmma::mem_row_major);
      __syncwarp();
      write_tile(stage[warp], dqkv + (static_cast<int64_t>(b) * N + rb * kTile) * tok + h * HD + warp * kTile, tok,
                 N - rb * kTile, lane);
      __syncwarp();
    }
    // 3b. dV += Pᵀ·dO_blk and dK += dSᵀ·Q_blk on the warp's own tiles (key tile jt, column tile c).
#pragma unroll
    for (int o = 0; o < kMaxOwned; ++o) {
      const int t = warp + kWarps * o;
      if (t < owned_total) {
        const int jt = t / DT, c = t % DT;
        FragAt pt, dst;
        FragB go, q;
        wmma::load_matrix_sync(pt, Pb + jt * kTile, Np);
        wmma::load_matrix_sync(go, Gs + rb * kTile * HD + c * kTile, HD);
        wmma::mma_sync(dV[o], pt, go, dV[o]);
        wmma::load_matrix_sync(dst, dSb + jt * kTile, Np);
        wmma::load_matrix_sync(q, Qs + rb * kTile * HD + c * kTile, HD);
        wmma::mma_sync(dK[o], dst, q, dK[o]);
      }
    }
    __syncthreads();  // the next row block overwrites S, dP, P and dS
  }

#pragma unroll
  for (int o = 0; o < kMaxOwned; ++o) {
    const int t = warp + kWarps * o;
    if (t < owned_total) {
      const int jt = t / DT, c = t % DT;
      bf* row0 = dqkv + (static_cast<int64_t>(b) * N + jt * kTile) * tok + h * HD + c * kTile;
      wmma::store_matrix_sync(stage[warp], dK[o], kTile, wmma::mem_row_major);
      __syncwarp();
      write_tile(stage[warp], row0 + A, tok, N - jt * kTile, lane);
      __syncwarp();
      wmma::store_matrix_sync(stage[warp], dV[o], kTile, wmma::mem_row_major);
      __syncwarp();
      write_tile(stage[warp], row0 + 2 * A, tok, N - jt * kTile, lane);
      __syncwarp();
    }
  }
}

// ---- The key-tile version (METAFORMER_CUDA_ATTN_BWD=tiles) ----
//
// Why another: the kernel above walks the query row blocks with all its warps in lock step, three
// barriers a row block, and its dQ products run on DT of its 16 warps while the others wait; on the
// H200 (2026-12-05, two caformer_s18 bf16 steps under Nsight Compute) it took 15.3 ms of 78.6 ms of
// kernel time, about 0.64 ms a call for under 0.05 ms of tensor-core work. Here the warps work alone
// between two barriers, as flash attention's backward does, the scores recomputed where needed:
//   A. each warp takes query row blocks: for each key tile, S and dP (16 × 16, fp32) and the rows'
//      running max m, normaliser l and Σ exp(s − m) · dP, rescaled as m grows (online softmax); then
//      m, 1 / l and D = Σ_j P ⊙ dP of each row into shared memory;
//   B. each warp takes a key tile: for each query row block, S and dP again, P = exp(scale·S − m) / l
//      and dS = scale · P ⊙ (dP − D) rounded to bf16 in the warp's own tiles, then dV += Pᵀ·dO_blk
//      and dK += dSᵀ·Q_blk in its registers;
//   C. each warp takes a query row block: for each key tile, the same P and dS, then dQ += dS·K_tile.
// B and C share one pool of 2 · KT jobs. Three products more per (query block, key tile) pair than
// the kernel above, on tensor cores that were idle; every sum in a fixed order, no atomics, so runs
// repeat bit for bit. P and dS are the same bf16 values up to the normaliser's rounding (l summed
// tile by tile here).
//
// Shared memory is laid out against bank conflicts, which the first version of this kernel (rows of
// HD, a lane reading 8 floats of one row) had four- to eightfold and which made it slower than the
// kernel above (2026-12-05, H100: 17.1 against 13.6 ms for CAFormer's stage 3 in two steps):
//   - q, k, v and dO rows are HD + 8 elements apart (kRowPad): the 8 rows of 16 bytes that a
//     fragment load reads fall in 8 different bank groups (HD = 32: rows 80 bytes apart);
//   - a lane reads the S and dP tiles as float4s of rows lane / 4 and lane / 4 + 8, columns
//     4 · (lane % 4) …: a quarter warp reads two whole rows;
//   - P and dS rows are kPLd = 24 bf16 (48 bytes) apart: the fragment loads' 8 rows fall in 8 groups.
constexpr int kRowPad = 8, kPLd = 24;

// A warp's private tiles: S and dP (fp32, rows of 16), P and dS (bf16, rows of kPLd), 32-byte aligned
// for WMMA.
struct WarpTiles {
  float s[kTile * kTile];
  float dp[kTile * kTile];
  bf p[kTile * kPLd];
  bf ds[kTile * kPLd];
};
static_assert(sizeof(WarpTiles) % 32 == 0 && offsetof(WarpTiles, ds) % 32 == 0, "WMMA needs 32-byte aligned tiles");

// S = Q_blk·K_tileᵀ and dP = dO_blk·V_tileᵀ of query block qb and key tile kt into the warp's tiles.
template <int HD>
__device__ __forceinline__ void scores_tile(const bf* Qs, const bf* Ks, const bf* Vs, const bf* Gs, int qb, int kt,
                                            WarpTiles& w) {
  constexpr int DT = HD / kTile, RS = HD + kRowPad;
  FragC s, dp;
  wmma::fill_fragment(s, 0.f);
  wmma::fill_fragment(dp, 0.f);
#pragma unroll
  for (int kk = 0; kk < DT; ++kk) {
    FragA a;
    FragBt bt;
    wmma::load_matrix_sync(a, Qs + qb * kTile * RS + kk * kTile, RS);
    wmma::load_matrix_sync(bt, Ks + kt * kTile * RS + kk * kTile, RS);
    wmma::mma_sync(s, a, bt, s);
    wmma::load_matrix_sync(a, Gs + qb * kTile * RS + kk * kTile, RS);
    wmma::load_matrix_sync(bt, Vs + kt * kTile * RS + kk * kTile, RS);
    wmma::mma_sync(dp, a, bt, dp);
  }
  wmma::store_matrix_sync(w.s, s, kTile, wmma::mem_row_major);
  wmma::store_matrix_sync(w.dp, dp, kTile, wmma::mem_row_major);
  __syncwarp();
}

// The 8 values of the scored tile that lane holds: rows lane / 4 and lane / 4 + 8, columns
// 4 · (lane % 4) … + 3 (index h · 4 + e: row half h, column e).
__device__ __forceinline__ void lane_values(const float* tile, int lane, float (&v)[8]) {
  const int r = lane >> 2, c = (lane & 3) * 4;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float4 f = *reinterpret_cast<const float4*>(tile + (r + 8 * h) * kTile + c);
    v[4 * h] = f.x, v[4 * h + 1] = f.y, v[4 * h + 2] = f.z, v[4 * h + 3] = f.w;
  }
}

// P and dS of the warp's scored tile, rounded to bf16 into its P and dS tiles. Padded query rows
// (i ≥ N) and padded keys (j ≥ N) get 0.
__device__ __forceinline__ void probabilities_tile(const float* stats, int Np, int N, int qb, int kt, float scale,
                                                   WarpTiles& w, int lane) {
  const int r = lane >> 2, c = (lane & 3) * 4;
  float s[8], dp[8];
  lane_values(w.s, lane, s);
  lane_values(w.dp, lane, dp);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int i = qb * kTile + r + 8 * h;
    const float m = stats[i], inv_l = stats[Np + i], D = stats[2 * Np + i];
    __align__(8) bf p4[4], ds4[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = kt * kTile + c + e;
      const float p = i < N && j < N ? expf(s[4 * h + e] * scale - m) * inv_l : 0.f;
      p4[e] = __float2bfloat16(p);
      ds4[e] = __float2bfloat16(scale * p * (dp[4 * h + e] - D));
    }
    *reinterpret_cast<uint2*>(w.p + (r + 8 * h) * kPLd + c) = *reinterpret_cast<const uint2*>(p4);
    *reinterpret_cast<uint2*>(w.ds + (r + 8 * h) * kPLd + c) = *reinterpret_cast<const uint2*>(ds4);
  }
  __syncwarp();
}

// Head size 32 (CAFormer's): two blocks an SM, 64 registers a thread (ptxas 11.8 for sm_90: 136 bytes of
// spills; about 120 registers without the bound, one block an SM). At 64, 600 bytes would spill.
template <int HD>
__global__ void __launch_bounds__(kWarps * 32, HD == 32 ? 2 : 1)
    attention_backward_tiles_kernel(const bf* qkv, const bf* dy, bf* dqkv, int N, int Np, int heads, float scale) {
  constexpr int DT = HD / kTile, RS = HD + kRowPad;
  extern __shared__ __align__(128) unsigned char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int h = blockIdx.x % heads, b = blockIdx.x / heads;
  const int64_t A = static_cast<int64_t>(heads) * HD, tok = 3 * A;
  bf* Qs = reinterpret_cast<bf*>(smem);  // [Np][RS] each
  bf* Ks = Qs + Np * RS;
  bf* Vs = Ks + Np * RS;
  bf* Gs = Vs + Np * RS;  // dO
  WarpTiles* tiles = reinterpret_cast<WarpTiles*>(Gs + Np * RS);
  float* stats = reinterpret_cast<float*>(tiles + warps);  // m, 1 / l, D: [3][Np]
  WarpTiles& w = tiles[warp];

  stage_head<HD>(qkv, dy, b, h, heads, N, Np, RS, Qs, Ks, Vs, Gs);
  __syncthreads();

  const int KT = Np / kTile;
  const int c = (lane & 3) * 4;
  // A. The rows' statistics. The 4 lanes of a row share its running max; each sums its own 4 keys.
  for (int qb = warp; qb < KT; qb += warps) {
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, d[2] = {0.f, 0.f};
    for (int kt = 0; kt < KT; ++kt) {
      scores_tile<HD>(Qs, Ks, Vs, Gs, qb, kt, w);
      float s[8], dp[8];
      lane_values(w.s, lane, s);
      lane_values(w.dp, lane, dp);
      __syncwarp();  // the next key tile overwrites S and dP
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float sr[4], dpr[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          sr[e] = kt * kTile + c + e < N ? s[4 * hh + e] * scale : -INFINITY;
          dpr[e] = dp[4 * hh + e];
        }
        row_stats_update(sr, dpr, m[hh], l[hh], d[hh]);
      }
    }
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
      row_stats_store(m[hh], l[hh], d[hh], stats, Np, qb * kTile + (lane >> 2) + 8 * hh, lane);
  }
  __syncthreads();

  // B and C: one pool of jobs, key tiles first.
  for (int job = warp; job < 2 * KT; job += warps) {
    if (job < KT) {  // B. dK and dV of key tile kt
      const int kt = job;
      FragC dK[DT], dV[DT];
#pragma unroll
      for (int ct = 0; ct < DT; ++ct) {
        wmma::fill_fragment(dK[ct], 0.f);
        wmma::fill_fragment(dV[ct], 0.f);
      }
      for (int qb = 0; qb < KT; ++qb) {
        scores_tile<HD>(Qs, Ks, Vs, Gs, qb, kt, w);
        probabilities_tile(stats, Np, N, qb, kt, scale, w, lane);
        FragAt pt, dst;
        wmma::load_matrix_sync(pt, w.p, kPLd);
        wmma::load_matrix_sync(dst, w.ds, kPLd);
#pragma unroll
        for (int ct = 0; ct < DT; ++ct) {
          FragB go, q;
          wmma::load_matrix_sync(go, Gs + qb * kTile * RS + ct * kTile, RS);
          wmma::mma_sync(dV[ct], pt, go, dV[ct]);
          wmma::load_matrix_sync(q, Qs + qb * kTile * RS + ct * kTile, RS);
          wmma::mma_sync(dK[ct], dst, q, dK[ct]);
        }
        __syncwarp();  // the next query block overwrites the tiles
      }
      bf* row0 = dqkv + (static_cast<int64_t>(b) * N + kt * kTile) * tok + h * HD;
#pragma unroll
      for (int ct = 0; ct < DT; ++ct) {
        wmma::store_matrix_sync(w.s, dK[ct], kTile, wmma::mem_row_major);
        __syncwarp();
        write_tile(w.s, row0 + A + ct * kTile, tok, N - kt * kTile, lane);
        __syncwarp();
        wmma::store_matrix_sync(w.s, dV[ct], kTile, wmma::mem_row_major);
        __syncwarp();
        write_tile(w.s, row0 + 2 * A + ct * kTile, tok, N - kt * kTile, lane);
        __syncwarp();
      }
    } else {  // C. dQ of query block qb
      const int qb = job - KT;
      FragC dQ[DT];
#pragma unroll
      for (int ct = 0; ct < DT; ++ct) wmma::fill_fragment(dQ[ct], 0.f);
      for (int kt = 0; kt < KT; ++kt) {
        scores_tile<HD>(Qs, Ks, Vs, Gs, qb, kt, w);
        probabilities_tile(stats, Np, N, qb, kt, scale, w, lane);
        FragA ds;
        wmma::load_matrix_sync(ds, w.ds, kPLd);
#pragma unroll
        for (int ct = 0; ct < DT; ++ct) {
          FragB k;
          wmma::load_matrix_sync(k, Ks + kt * kTile * RS + ct * kTile, RS);
          wmma::mma_sync(dQ[ct], ds, k, dQ[ct]);
        }
        __syncwarp();
      }
      bf* row0 = dqkv + (static_cast<int64_t>(b) * N + qb * kTile) * tok + h * HD;
#pragma unroll
      for (int ct = 0; ct < DT; ++ct) {
        wmma::store_matrix_sync(w.s, dQ[ct], kTile, wmma::mem_row_major);
        __syncwarp();
        write_tile(w.s, row0 + ct * kTile, tok, N - qb * kTile, lane);
        __syncwarp();
      }
    }
  }
}

int64_t padded_tokens(int64_t N) { return (N + kTile - 1) / kTile * kTile; }

size_t shared_bytes(int64_t Np, int head_dim) {
  return static_cast<size_t>(Np) * head_dim * 2 * 4 + static_cast<size_t>(Np) * kTile * (4 * 2 + 2 * 2);
}

// The key-tile kernel's warps and shared memory (q, k, v, dO, each warp's tiles, the rows'
// statistics). As many warps as there are B and C jobs, at most 16, and no more than keep two blocks
// on an SM (113 KB each of the SM's 228, less 1 KB the runtime keeps a block): at CAFormer's 196
// tokens, head size 32, 13 warps, one a query block in step A.
int64_t tiles_fixed_bytes(int64_t Np, int head_dim) {
  return Np * (head_dim + kRowPad) * 2 * 4 + static_cast<int64_t>(sizeof(float)) * 3 * Np;
}
int tiles_warps(int64_t Np, int head_dim) {
  int64_t warps = std::min<int64_t>(kWarps, 2 * (Np / kTile));
  const int64_t fit = (113 * 1024 - tiles_fixed_bytes(Np, head_dim)) / static_cast<int64_t>(sizeof(WarpTiles));
  if (fit >= 4) warps = std::min(warps, fit);
  return static_cast<int>(warps);
}
size_t tiles_shared_bytes(int64_t Np, int head_dim) {
  return static_cast<size_t>(tiles_fixed_bytes(Np, head_dim)) + sizeof(WarpTiles) * tiles_warps(Np, head_dim);
}

template <int HD>
cudaError_t launch(const bf* qkv, const bf* dy, bf* dqkv, int64_t batch, int64_t N, int heads, float scale, bool tiles,
                   cudaStream_t s) {
  const int64_t Np = padded_tokens(N);
  static size_t allowed = 0, allowed_tiles = 0;  // each kernel's dynamic shared memory limit, raised as needed
  if (tiles) {
    const size_t bytes = tiles_shared_bytes(Np, HD);
    const cudaError_t e = kernels::allow_dynamic_shared(attention_backward_tiles_kernel<HD>, bytes, allowed_tiles);
    if (e != cudaSuccess) return e;
    attention_backward_tiles_kernel<HD><<<static_cast<unsigned>(batch * heads), tiles_warps(Np, HD) * 32, bytes, s>>>(
        qkv, dy, dqkv, static_cast<int>(N), static_cast<int>(Np), heads, scale);
    return cudaGetLastError();
  }
  const size_t bytes = shared_bytes(Np, HD);
  const cudaError_t e = kernels::allow_dynamic_shared(attention_backward_wmma_kernel<HD>, bytes, allowed);
  if (e != cudaSuccess) return e;
  attention_backward_wmma_kernel<HD><<<static_cast<unsigned>(batch * heads), kWarps * 32, bytes, s>>>(
      qkv, dy, dqkv, static_cast<int>(N), static_cast<int>(Np), heads, scale);
  return cudaGetLastError();
}

}  // namespace

bool attention_backward_wmma_supports(int64_t N, int heads, int head_dim, const void* qkv, const void* dy,
                                      const void* dqkv, bool tiles) {
  const int64_t Np = padded_tokens(N);
  const bool aligned = reinterpret_cast<uintptr_t>(qkv) % 16 == 0 && reinterpret_cast<uintptr_t>(dy) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(dqkv) % 16 == 0;
  const bool shape = (head_dim == 32 || head_dim == 64) && N >= 1 && heads >= 1 && aligned;
  if (tiles) return shape && tiles_shared_bytes(Np, head_dim) <= 200 * 1024;
  return shape && Np <= 32 * kMaxKeysPerLane && Np * head_dim <= 256 * kWarps * kMaxOwned &&
         shared_bytes(Np, head_dim) <= 200 * 1024;
}

cudaError_t attention_backward_wmma(const bf16* qkv, const bf16* dy, bf16* dqkv, int64_t batch, int64_t N, int heads,
                                    int head_dim, float scale, bool tiles, cudaStream_t s) {
  if (batch <= 0 || N <= 0) return cudaGetLastError();
  if (batch * heads > 0x7fffffff) return cudaErrorInvalidValue;
  const bf* q = reinterpret_cast<const bf*>(qkv);
  const bf* g = reinterpret_cast<const bf*>(dy);
  bf* d = reinterpret_cast<bf*>(dqkv);
  return head_dim == 32 ? launch<32>(q, g, d, batch, N, heads, scale, tiles, s)
                        : launch<64>(q, g, d, batch, N, heads, scale, tiles, s);
}

}  // namespace mf::cuda::backward
