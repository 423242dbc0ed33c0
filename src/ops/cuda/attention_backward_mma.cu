// Attention's backward pass in bf16, head size 32, with raw mma.sync: the key-tile kernel of
// attention_backward_wmma.cu (its phases A, B and C, its job pool, its statistics) with every
// product's operands and results in registers (METAFORMER_CUDA_ATTN_BWD=mma; the default since the
// H100 A/B of 2026-12-05, tools/device/cuda_check.sh attnmma: 5.9 against 9.8 ms in two caformer_s18 steps).
//
// Why: WMMA hides the accumulator's layout, so the key-tile kernel stages each 16 × 16 tile of S and
// dP through shared memory as fp32, reads it back to compute P and dS, and writes those as bf16 to
// load them again as fragments: about 9 KB of shared-memory traffic per (query block, key tile)
// pair besides the operands' fragments. On an H100 (2026-12-05) it still took about 0.5 ms a call at
// CAFormer's stage 3 for well under 0.1 ms of tensor-core work. With mma.m16n8k16 the layouts are
// PTX's documented ones (lane = 4g + t: A rows g, g + 8 and columns 2t, 2t + 1, 2t + 8, 2t + 9; B
// rows 2t, 2t + 1, 2t + 8, 2t + 9 of column g; D rows g, g + 8, columns 2t, 2t + 1), and the D tiles
// of two neighbouring 16 × 8 products are exactly the A fragment of the next product (flash
// attention's reuse): P and dS never leave the registers.
//
// Each product reads its operands as 32-bit pairs from shared memory. The pairs must be two
// neighbours along the product's k dimension, so the head's q, k, v and dO are staged twice where
// needed: row-major (token × dim, rows 40 elements apart: the 8 rows of a fragment load fall in 8
// bank groups) for products over the head's dimensions, and q, k, dO transposed (dim × token, rows
// Np + 8 apart, likewise conflict-free for Np a multiple of 16) for products over the tokens:
//   A (per query block): S = Q·Kᵀ and dP = dO·Vᵀ, the rows' max, normaliser and D = Σ P ⊙ dP;
//   B (per key tile): Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ, so that Pᵀ and dSᵀ come out with the keys as rows:
//     dV += Pᵀ·dO (dO transposed), dK += dSᵀ·Q (q transposed);
//   C (per query block): S and dP again, dQ += dS·K (k transposed).
// Sums in a fixed order, no atomics: runs repeat bit for bit.
// With the forward's output y and log-sum-exps (lse; METAFORMER_CUDA_ATTN_STATS, on by default),
// phase A goes: each row's m is its log-sum-exp, 1 / l is 1 and D = Σ dO ⊙ y over the head's
// dimensions (FlashAttention-2's), so 2 of the 9 products a (query block, key tile) pair and a third
// of the exponentials are not computed. D then comes from the bf16-rounded output rather than from
// P ⊙ dP, a difference of bf16's rounding.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/env_switch.h"
#include "ops/cuda/attention_rows.cuh"
#include "ops/cuda/backward_kernels.h"
#include "ops/cuda/kernels/common.cuh"
#include "ops/cuda/kernels/mma_sync.cuh"

namespace mf::cuda::backward {
namespace {

using bf = __nv_bfloat16;

constexpr int kD = 32;          // head size
constexpr int kRow = kD + 8;    // row-major rows (elements)
// Warps a block: two blocks an SM in 96 registers a thread without spills (ptxas 11.8, sm_90; 12
// warps spilled 40 bytes, 16 spilled 308).
constexpr int kMaxWarps = 10;

using kernels::mma_bf16;
using kernels::pack_bf16;

__device__ __forceinline__ uint32_t word(const bf* p) { return *reinterpret_cast<const uint32_t*>(p); }

// The A fragment of k-step ks (dims 16·ks …) of the 16 rows from `rows` (row-major, kRow apart).
__device__ __forceinline__ void a_rows(uint32_t (&a)[4], const bf* rows, int ks, int g, int t) {
  const bf* p = rows + g * kRow + ks * 16 + 2 * t;
  a[0] = word(p);
  a[1] = word(p + 8 * kRow);
  a[2] = word(p + 8);
  a[3] = word(p + 8 * kRow + 8);
}

// Two 16 × 8 products over the head's dimensions: out[h] = L·Rᵀ for the 16 rows of `left` and the 8
// rows `right` + 8h … (both row-major), h = 0, 1: a 16 × 16 tile of L·Rᵀ as two D fragments.
__device__ __forceinline__ void dims_product(float (&out)[2][4], const bf* left, const bf* right, int g, int t) {
#pragma unroll
  for (int h = 0; h < 2; ++h) out[h][0] = out[h][1] = out[h][2] = out[h][3] = 0.f;
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) {
    uint32_t a[4];
    a_rows(a, left, ks, g, t);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const bf* p = right + (h * 8 + g) * kRow + ks * 16 + 2 * t;
      mma_bf16(out[h], a, word(p), word(p + 8));
    }
  }
}

// acc[dt] += X·Y for X the 16 × 16 tile in `x` (two D fragments, rounded to bf16 here: x[h] holds
// columns 8h …) and Y the 16 tokens × 32 dims whose transpose is `yt` (dim × token rows `ld` apart),
// tokens `tok0` …
__device__ __forceinline__ void tokens_product(float (&acc)[kD / 8][4], const float (&x)[2][4], const bf* yt, int ld,
                                               int tok0, int g, int t) {
  const uint32_t a[4] = {pack_bf16(x[0][0], x[0][1]), pack_bf16(x[0][2], x[0][3]), pack_bf16(x[1][0], x[1][1]),
                         pack_bf16(x[1][2], x[1][3])};
#pragma unroll
  for (int dt = 0; dt < kD / 8; ++dt) {
    const bf* p = yt + (dt * 8 + g) * ld + tok0 + 2 * t;
    mma_bf16(acc[dt], a, word(p), word(p + 8));
  }
}

// A D-fragment tile (rows row0 + g, + 8; dims 8·dt + 2t, + 1) to bf16 in global memory, rows < N.
__device__ __forceinline__ void store_rows(const float (&acc)[kD / 8][4], bf* to, int64_t stride, int row0, int N,
                                           int g, int t) {
#pragma unroll
  for (int dt = 0; dt < kD / 8; ++dt) {
    if (row0 + g < N)
      *reinterpret_cast<uint32_t*>(to + (row0 + g) * stride + dt * 8 + 2 * t) = pack_bf16(acc[dt][0], acc[dt][1]);
    if (row0 + g + 8 < N)
      *reinterpret_cast<uint32_t*>(to + (row0 + g + 8) * stride + dt * 8 + 2 * t) = pack_bf16(acc[dt][2], acc[dt][3]);
  }
}

__global__ void __launch_bounds__(kMaxWarps * 32, 2)
    attention_backward_mma_kernel(const bf* qkv, const bf* dy, bf* dqkv, int N, int Np, int heads, float scale,
                                  const bf* y, const float* lse) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int h = blockIdx.x % heads, b = blockIdx.x / heads;
  const int64_t A = static_cast<int64_t>(heads) * kD, tok = 3 * A;
  const int ldt = Np + 8;  // transposed rows
  bf* Qs = reinterpret_cast<bf*>(smem);  // [Np][kRow] each
  bf* Ks = Qs + Np * kRow;
  bf* Vs = Ks + Np * kRow;
  bf* Gs = Vs + Np * kRow;               // dO
  bf* Qt = Gs + Np * kRow;               // [kD][ldt] each
  bf* Kt = Qt + kD * ldt;
  bf* Gt = Kt + kD * ldt;
  float* stats = reinterpret_cast<float*>(Gt + kD * ldt);  // m, 1 / l, D: [3][Np]

  // Stage: 16 bytes (8 dims of one token) a thread and tensor; rows past N zero.
  const bf* base = qkv + static_cast<int64_t>(b) * N * tok + h * kD;
  const bf* gbase = dy + static_cast<int64_t>(b) * N * A + h * kD;
  for (int idx = threadIdx.x; idx < Np * (kD / 8); idx += blockDim.x) {
    const int i = idx / (kD / 8), d0 = (idx % (kD / 8)) * 8;
    uint4 q = make_uint4(0, 0, 0, 0), k = q, v = q, o = q;
    if (i < N) {
      const bf* src = base + i * tok + d0;
      q = *reinterpret_cast<const uint4*>(src);
      k = *reinterpret_cast<const uint4*>(src + A);
      v = *reinterpret_cast<const uint4*>(src + 2 * A);
      o = *reinterpret_cast<const uint4*>(gbase + i * A + d0);
    }
    *reinterpret_cast<uint4*>(Qs + i * kRow + d0) = q;
    *reinterpret_cast<uint4*>(Ks + i * kRow + d0) = k;
    *reinterpret_cast<uint4*>(Vs + i * kRow + d0) = v;
    *reinterpret_cast<uint4*>(Gs + i * kRow + d0) = o;
    const bf* qe = reinterpret_cast<const bf*>(&q);
    const bf* ke = reinterpret_cast<const bf*>(&k);
    const bf* oe = reinterpret_cast<const bf*>(&o);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      Qt[(d0 + e) * ldt + i] = qe[e];
      Kt[(d0 + e) * ldt + i] = ke[e];
      Gt[(d0 + e) * ldt + i] = oe[e];
    }
  }
  __syncthreads();

  const int KT = Np / 16;
  if (lse) {  // the statistics from the forward: a thread a row
    for (int i = threadIdx.x; i < Np; i += blockDim.x) {
      float m = 0.f, d = 0.f;
      if (i < N) {
        m = lse[(static_cast<int64_t>(b) * heads + h) * N + i];
        const bf* yr = y + (static_cast<int64_t>(b) * N + i) * A + h * kD;
#pragma unroll
        for (int d0 = 0; d0 < kD; d0 += 8) {
          const uint4 raw = *reinterpret_cast<const uint4*>(yr + d0);
          const bf* ye = reinterpret_cast<const bf*>(&raw);
#pragma unroll
          for (int e = 0; e < 8; ++e) d += __bfloat162float(ye[e]) * __bfloat162float(Gs[i * kRow + d0 + e]);
        }
      }
      stats[i] = m;
      stats[Np + i] = 1.f;
      stats[2 * Np + i] = d;
    }
  }
  __syncthreads();
  // A. Per query block: the rows' statistics, online over the key tiles. A lane holds rows g
  // (index 0) and g + 8 (index 1); the 4 lanes of a row share its running max.
  for (int qb = lse ? KT : warp; qb < KT; qb += warps) {
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, d[2] = {0.f, 0.f};
    for (int kt = 0; kt < KT; ++kt) {
      float s[2][4], dp[2][4];
      dims_product(s, Qs + qb * 16 * kRow, Ks + kt * 16 * kRow, g, t);
      dims_product(dp, Gs + qb * 16 * kRow, Vs + kt * 16 * kRow, g, t);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float sr[4], dpr[4];  // the row's 4 keys on this lane: 2t, 2t + 1 of each half
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int key = kt * 16 + hh * 8 + 2 * t + e;
            sr[2 * hh + e] = key < N ? s[hh][2 * r + e] * scale : -INFINITY;
            dpr[2 * hh + e] = dp[hh][2 * r + e];
          }
        row_stats_update(sr, dpr, m[r], l[r], d[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) row_stats_store(m[r], l[r], d[r], stats, Np, qb * 16 + g + 8 * r, lane);
  }
  __syncthreads();

  // B and C: one pool of jobs, key tiles first.
  for (int job = warp; job < 2 * KT; job += warps) {
    float acc1[kD / 8][4] = {}, acc2[kD / 8][4] = {};
    if (job < KT) {  // B. dV (acc1) and dK (acc2) of key tile kt: the keys are the rows
      const int kt = job;
      for (int qb = 0; qb < KT; ++qb) {
        float s[2][4], dp[2][4];
        dims_product(s, Ks + kt * 16 * kRow, Qs + qb * 16 * kRow, g, t);   // Sᵀ
        dims_product(dp, Vs + kt * 16 * kRow, Gs + qb * 16 * kRow, g, t);  // dPᵀ
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
          for (int e = 0; e < 2; ++e) {  // the query (column) 2t + e of half hh, for both key rows
            const int i = qb * 16 + hh * 8 + 2 * t + e;
            const float m = stats[i], inv_l = stats[Np + i], D = stats[2 * Np + i];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              const int key = kt * 16 + g + 8 * r;
              const float p = i < N && key < N ? expf(s[hh][2 * r + e] * scale - m) * inv_l : 0.f;
              dp[hh][2 * r + e] = scale * p * (dp[hh][2 * r + e] - D);  // dSᵀ
              s[hh][2 * r + e] = p;                                       // Pᵀ
            }
          }
        tokens_product(acc1, s, Gt, ldt, qb * 16, g, t);   // dV += Pᵀ·dO
        tokens_product(acc2, dp, Qt, ldt, qb * 16, g, t);  // dK += dSᵀ·Q
      }
      bf* row0 = dqkv + static_cast<int64_t>(b) * N * tok + h * kD;
      store_rows(acc2, row0 + A, tok, kt * 16, N, g, t);
      store_rows(acc1, row0 + 2 * A, tok, kt * 16, N, g, t);
    } else {  // C. dQ (acc1) of query block qb
      const int qb = job - KT;
      float m[2], inv_l[2], D[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int i = qb * 16 + g + 8 * r;
        m[r] = stats[i], inv_l[r] = stats[Np + i], D[r] = stats[2 * Np + i];
      }
      for (int kt = 0; kt < KT; ++kt) {
        float s[2][4], dp[2][4];
        dims_product(s, Qs + qb * 16 * kRow, Ks + kt * 16 * kRow, g, t);
        dims_product(dp, Gs + qb * 16 * kRow, Vs + kt * 16 * kRow, g, t);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int key = kt * 16 + hh * 8 + 2 * t + e;
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              const int i = qb * 16 + g + 8 * r;
              const float p = i < N && key < N ? expf(s[hh][2 * r + e] * scale - m[r]) * inv_l[r] : 0.f;
              dp[hh][2 * r + e] = scale * p * (dp[hh][2 * r + e] - D[r]);  // dS
            }
          }
        tokens_product(acc1, dp, Kt, ldt, kt * 16, g, t);  // dQ += dS·K
      }
      store_rows(acc1, dqkv + static_cast<int64_t>(b) * N * tok + h * kD, tok, qb * 16, N, g, t);
    }
  }
}

int64_t padded(int64_t N) { return (N + 15) / 16 * 16; }
size_t shared_bytes(int64_t Np) {
  return static_cast<size_t>(Np) * kRow * 2 * 4 + static_cast<size_t>(kD) * (Np + 8) * 2 * 3 + sizeof(float) * 3 * Np;
}

// ---- METAFORMER_CUDA_ATTN_BWD_DS=1: dS computed once, kept in shared memory -------------------------
// The default since the H200 A/B of 2026-12-07 (caformer_s18's bf16 training +1.6 % and +2.7 % in two
// rounds); METAFORMER_CUDA_ATTN_BWD_DS=0 runs the kernel above.
// The kernel above computes S and dP twice a (query block, key tile) pair, in phase B (transposed,
// for dV and dK) and again in phase C (for dQ), and reads its operands with 32-bit shared loads from
// copies staged twice (row-major, and transposed with 2-byte stores). By the byte count of its shared
// loads (about 88 words a lane a pair), its 28 products and 2 × 8 exponentials a lane a pair, shared
// memory was its first limit, then the tensor cores. This kernel, for the forward's statistics only:
//   B (per key tile kt, one warp): the key tile's K and V A fragments held in registers for the whole
//     row of query blocks; Sᵀ and dPᵀ once a pair (B fragments by ldmatrix), Pᵀ and dSᵀ in registers,
//     dV += Pᵀ·dO and dK += dSᵀ·Q with dO and Q read transposed by ldmatrix.trans from their row-major
//     copies (no transposed staging), and dSᵀ written as bf16 to a [Np][Np + 8] tile;
//   C (per query block, after one barrier): dQ += dS·K, dS read back transposed by ldmatrix.trans.
// 20 products a pair, 8 exponentials a lane, about 48 shared words a lane. dS is the value phase C
// used, rounded to bf16 as it was, but taken from Sᵀ rather than S: the bits may differ from the
// kernel above's in the last place. The [Np][Np + 8] tile (90 KB at CAFormer's N = 196) leaves one
// CTA of ceil(N / 16) warps an SM; rows Np + 8 elements apart keep ldmatrix's eight rows and the
// 32-bit stores in distinct bank groups for any Np that is a multiple of 16.
constexpr int kDsMaxWarps = 16;

// The A fragments of the 16 rows `rows` … over the head's 32 dims (row-major, kRow apart).
__device__ __forceinline__ void a_tile(uint32_t (&a)[kD / 16][4], const bf* rows, int g, int t) {
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) a_rows(a[ks], rows, ks, g, t);
}

// out[h] = L·Rᵀ over the head's dims, L held as A fragments, R the 16 rows `right` … (row-major):
// one ldmatrix a k-step gives both halves' B fragments (matrix j: rows 8 (j / 2) …, dims 8 (j % 2) …).
__device__ __forceinline__ void dims_product_held(float (&out)[2][4], const uint32_t (&a)[kD / 16][4], const bf* right,
                                                  int lane) {
  const int j = lane >> 3, r = lane & 7;
#pragma unroll
  for (int h = 0; h < 2; ++h) out[h][0] = out[h][1] = out[h][2] = out[h][3] = 0.f;
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) {
    uint32_t b[4];
    kernels::ldmatrix_x4<false>(b, right + ((j >> 1) * 8 + r) * kRow + ks * 16 + (j & 1) * 8);
    mma_bf16(out[0], a[ks], b[0], b[1]);
    mma_bf16(out[1], a[ks], b[2], b[3]);
  }
}

// Two D fragments (a 16 × 16 tile, x[h] holding columns 8h …) as one bf16 A fragment.
__device__ __forceinline__ void pack_tile(uint32_t (&a)[4], const float (&x)[2][4]) {
  a[0] = pack_bf16(x[0][0], x[0][1]);
  a[1] = pack_bf16(x[0][2], x[0][3]);
  a[2] = pack_bf16(x[1][0], x[1][1]);
  a[3] = pack_bf16(x[1][2], x[1][3]);
}

// acc[dt] += X·Y for X a 16 × 16 A fragment and Y the 16 tokens `rows` … × 32 dims (row-major, kRow
// apart), Y's B fragments read transposed: matrix j of a load is tokens 8 (j % 2) …, dims 16·pair +
// 8 (j / 2) …, so registers 0, 1 are dt = 2·pair's b0, b1 and 2, 3 those of dt = 2·pair + 1.
__device__ __forceinline__ void tokens_product_rows(float (&acc)[kD / 8][4], const uint32_t (&a)[4], const bf* rows,
                                                    int lane) {
  const int j = lane >> 3, r = lane & 7;
#pragma unroll
  for (int pair = 0; pair < kD / 16; ++pair) {
    uint32_t b[4];
    kernels::ldmatrix_x4<true>(b, rows + ((j & 1) * 8 + r) * kRow + pair * 16 + (j >> 1) * 8);
    mma_bf16(acc[2 * pair], a, b[0], b[1]);
    mma_bf16(acc[2 * pair + 1], a, b[2], b[3]);
  }
}

__global__ void __launch_bounds__(kDsMaxWarps * 32, 1)
    attention_backward_ds_kernel(const bf* qkv, const bf* dy, bf* dqkv, int N, int Np, int heads, float scale,
                                 const bf* y, const float* lse) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int h = blockIdx.x % heads, b = blockIdx.x / heads;
  const int64_t A = static_cast<int64_t>(heads) * kD, tok = 3 * A;
  const int lds = Np + 8;
  bf* Qs = reinterpret_cast<bf*>(smem);  // [Np][kRow] each
  bf* Ks = Qs + Np * kRow;
  bf* Vs = Ks + Np * kRow;
  bf* Gs = Vs + Np * kRow;                                  // dO
  bf* dSt = Gs + Np * kRow;                                 // dSᵀ: [Np keys][lds]
  float* stats = reinterpret_cast<float*>(dSt + Np * lds);  // m, D: [2][Np]

  const bf* base = qkv + static_cast<int64_t>(b) * N * tok + h * kD;
  const bf* gbase = dy + static_cast<int64_t>(b) * N * A + h * kD;
  for (int idx = threadIdx.x; idx < Np * (kD / 8); idx += blockDim.x) {
    const int i = idx / (kD / 8), d0 = (idx % (kD / 8)) * 8;
    uint4 q = make_uint4(0, 0, 0, 0), k = q, v = q, o = q;
    if (i < N) {
      const bf* src = base + i * tok + d0;
      q = *reinterpret_cast<const uint4*>(src);
      k = *reinterpret_cast<const uint4*>(src + A);
      v = *reinterpret_cast<const uint4*>(src + 2 * A);
      o = *reinterpret_cast<const uint4*>(gbase + i * A + d0);
    }
    *reinterpret_cast<uint4*>(Qs + i * kRow + d0) = q;
    *reinterpret_cast<uint4*>(Ks + i * kRow + d0) = k;
    *reinterpret_cast<uint4*>(Vs + i * kRow + d0) = v;
    *reinterpret_cast<uint4*>(Gs + i * kRow + d0) = o;
  }
  for (int i = threadIdx.x; i < Np; i += blockDim.x) {  // the forward's statistics: m = lse, 1 / l = 1
    float m = 0.f, d = 0.f;
    if (i < N) {
      m = lse[(static_cast<int64_t>(b) * heads + h) * N + i];
      const bf* yr = y + (static_cast<int64_t>(b) * N + i) * A + h * kD;
      const bf* gr = gbase + i * A;
#pragma unroll
      for (int d0 = 0; d0 < kD; d0 += 8) {  // D = Σ dO ⊙ y, in the order of the kernel above
        const uint4 raw = *reinterpret_cast<const uint4*>(yr + d0), graw = *reinterpret_cast<const uint4*>(gr + d0);
        const bf* ye = reinterpret_cast<const bf*>(&raw);
        const bf* ge = reinterpret_cast<const bf*>(&graw);
#pragma unroll
        for (int e = 0; e < 8; ++e) d += __bfloat162float(ye[e]) * __bfloat162float(ge[e]);
      }
    }
    stats[i] = m;
    stats[Np + i] = d;
  }
  __syncthreads();

  const int KT = Np / 16;
  // B. dV (acc1) and dK (acc2) of key tile kt, the keys as rows; dSᵀ to shared memory.
  for (int kt = warp; kt < KT; kt += warps) {
    uint32_t ka[kD / 16][4], va[kD / 16][4];
    a_tile(ka, Ks + kt * 16 * kRow, g, t);
    a_tile(va, Vs + kt * 16 * kRow, g, t);
    float acc1[kD / 8][4] = {}, acc2[kD / 8][4] = {};
    for (int qb = 0; qb < KT; ++qb) {
      float s[2][4], dp[2][4];
      dims_product_held(s, ka, Qs + qb * 16 * kRow, lane);   // Sᵀ
      dims_product_held(dp, va, Gs + qb * 16 * kRow, lane);  // dPᵀ
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
#pragma unroll
        for (int e = 0; e < 2; ++e) {  // the query (column) 2t + e of half hh, for both key rows
          const int i = qb * 16 + hh * 8 + 2 * t + e;
          const float m = stats[i], D = stats[Np + i];
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int key = kt * 16 + g + 8 * r;
            const float p = i < N && key < N ? expf(s[hh][2 * r + e] * scale - m) : 0.f;
            dp[hh][2 * r + e] = scale * p * (dp[hh][2 * r + e] - D);  // dSᵀ
            s[hh][2 * r + e] = p;                                     // Pᵀ
          }
        }
      uint32_t pa[4], da[4];
      pack_tile(pa, s);
      pack_tile(da, dp);
      bf* row = dSt + (kt * 16 + g) * lds + qb * 16 + 2 * t;
      *reinterpret_cast<uint32_t*>(row) = da[0];
      *reinterpret_cast<uint32_t*>(row + 8 * lds) = da[1];
      *reinterpret_cast<uint32_t*>(row + 8) = da[2];
      *reinterpret_cast<uint32_t*>(row + 8 * lds + 8) = da[3];
      tokens_product_rows(acc1, pa, Gs + qb * 16 * kRow, lane);  // dV += Pᵀ·dO
      tokens_product_rows(acc2, da, Qs + qb * 16 * kRow, lane);  // dK += dSᵀ·Q
    }
    bf* row0 = dqkv + static_cast<int64_t>(b) * N * tok + h * kD;
    store_rows(acc2, row0 + A, tok, kt * 16, N, g, t);
    store_rows(acc1, row0 + 2 * A, tok, kt * 16, N, g, t);
  }
  __syncthreads();
  // C. dQ of query block qb: dS's A fragments read transposed from dSᵀ (matrix j: keys 8 (j / 2) …,
  // queries 8 (j % 2) …, which are a0 … a3).
  const int j = lane >> 3, r = lane & 7;
  for (int qb = warp; qb < KT; qb += warps) {
    float acc[kD / 8][4] = {};
    for (int kt = 0; kt < KT; ++kt) {
      uint32_t a[4];
      kernels::ldmatrix_x4<true>(a, dSt + (kt * 16 + (j >> 1) * 8 + r) * lds + qb * 16 + (j & 1) * 8);
      tokens_product_rows(acc, a, Ks + kt * 16 * kRow, lane);  // dQ += dS·K
    }
    store_rows(acc, dqkv + static_cast<int64_t>(b) * N * tok + h * kD, tok, qb * 16, N, g, t);
  }
}

size_t ds_shared_bytes(int64_t Np) {
  return static_cast<size_t>(Np) * kRow * 2 * 4 + static_cast<size_t>(Np) * (Np + 8) * 2 + sizeof(float) * 2 * Np;
}

bool ds_chosen(int64_t N, const float* lse) {
  return lse != nullptr && ds_shared_bytes(padded(N)) <= 220 * 1024 &&
         env_choice("METAFORMER_CUDA_ATTN_BWD_DS", {"0", "1"}) != 0;
}

}  // namespace

bool attention_backward_mma_supports(int64_t N, int heads, int head_dim, const void* qkv, const void* dy,
                                     const void* dqkv, const void* y) {
  const bool aligned = reinterpret_cast<uintptr_t>(qkv) % 16 == 0 && reinterpret_cast<uintptr_t>(dy) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(dqkv) % 4 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
  return head_dim == kD && N >= 1 && heads >= 1 && aligned && shared_bytes(padded(N)) <= 200 * 1024;
}

cudaError_t attention_backward_mma(const bf16* qkv, const bf16* dy, bf16* dqkv, int64_t batch, int64_t N, int heads,
                                   float scale, cudaStream_t s, const bf16* y, const float* lse) {
  if ((y == nullptr) != (lse == nullptr)) return cudaErrorInvalidValue;
  if (batch <= 0 || N <= 0) return cudaGetLastError();
  if (batch * heads > 0x7fffffff) return cudaErrorInvalidValue;
  const int64_t Np = padded(N);
  if (ds_chosen(N, lse)) {
    const size_t bytes = ds_shared_bytes(Np);
    static size_t allowed_ds = 0;
    if (const cudaError_t e = kernels::allow_dynamic_shared(attention_backward_ds_kernel, bytes, allowed_ds);
        e != cudaSuccess)
      return e;
    const int warps = static_cast<int>(std::min<int64_t>(kDsMaxWarps, Np / 16));
    attention_backward_ds_kernel<<<static_cast<unsigned>(batch * heads), warps * 32, bytes, s>>>(
        reinterpret_cast<const bf*>(qkv), reinterpret_cast<const bf*>(dy), reinterpret_cast<bf*>(dqkv),
        static_cast<int>(N), static_cast<int>(Np), heads, scale, reinterpret_cast<const bf*>(y), lse);
    return cudaGetLastError();
  }
  const size_t bytes = shared_bytes(Np);
  static size_t allowed = 0;  // the kernel's dynamic shared memory limit, raised once as needed
  if (const cudaError_t e = kernels::allow_dynamic_shared(attention_backward_mma_kernel, bytes, allowed);
      e != cudaSuccess)
    return e;
  const int warps = static_cast<int>(std::min<int64_t>(kMaxWarps, 2 * (Np / 16)));
  attention_backward_mma_kernel<<<static_cast<unsigned>(batch * heads), warps * 32, bytes, s>>>(
      reinterpret_cast<const bf*>(qkv), reinterpret_cast<const bf*>(dy), reinterpret_cast<bf*>(dqkv),
      static_cast<int>(N), static_cast<int>(Np), heads, scale, reinterpret_cast<const bf*>(y), lse);
  return cudaGetLastError();
}

}  // namespace mf::cuda::backward
