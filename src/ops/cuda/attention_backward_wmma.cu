// Attention's backward pass in bf16 on the tensor cores, one block per (sample, head), nothing N×N in
// global memory: the default with bf16 activations since the H200 A/B of 2026-12-05
// (tools/device/cuda_check.sh candidates; METAFORMER_CUDA_ATTN_BWD=gemm runs the previous default).
//
// Why: the default (cuda_backward.cpp, attention_backward_gemm) runs the five products through
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

#include <cstdint>

#include "ops/cuda/backward_kernels.h"

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
    reinterpret_cast<uint4*>(Qs)[idx] = q;
    reinterpret_cast<uint4*>(Ks)[idx] = k;
    reinterpret_cast<uint4*>(Vs)[idx] = vv;
    reinterpret_cast<uint4*>(Gs)[idx] = g;
  }

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

int64_t padded_tokens(int64_t N) { return (N + kTile - 1) / kTile * kTile; }

size_t shared_bytes(int64_t Np, int head_dim) {
  return static_cast<size_t>(Np) * head_dim * 2 * 4 + static_cast<size_t>(Np) * kTile * (4 * 2 + 2 * 2);
}

template <int HD>
cudaError_t launch(const bf* qkv, const bf* dy, bf* dqkv, int64_t batch, int64_t N, int heads, float scale,
                   cudaStream_t s) {
  const int64_t Np = padded_tokens(N);
  const size_t bytes = shared_bytes(Np, HD);
  static size_t allowed = 0;  // this instantiation's dynamic shared memory limit, raised once as needed
  if (bytes > allowed) {
    const cudaError_t e = cudaFuncSetAttribute(attention_backward_wmma_kernel<HD>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (e != cudaSuccess) return e;
    allowed = bytes;
  }
  attention_backward_wmma_kernel<HD><<<static_cast<unsigned>(batch * heads), kWarps * 32, bytes, s>>>(
      qkv, dy, dqkv, static_cast<int>(N), static_cast<int>(Np), heads, scale);
  return cudaGetLastError();
}

}  // namespace

bool attention_backward_wmma_supports(int64_t N, int heads, int head_dim, const void* qkv, const void* dy,
                                      const void* dqkv) {
  const int64_t Np = padded_tokens(N);
  const bool aligned = reinterpret_cast<uintptr_t>(qkv) % 16 == 0 && reinterpret_cast<uintptr_t>(dy) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(dqkv) % 16 == 0;
  return (head_dim == 32 || head_dim == 64) && N >= 1 && Np <= 32 * kMaxKeysPerLane &&
         Np * head_dim <= 256 * kWarps * kMaxOwned && shared_bytes(Np, head_dim) <= 200 * 1024 && heads >= 1 &&
         aligned;
}

cudaError_t attention_backward_wmma(const bf16* qkv, const bf16* dy, bf16* dqkv, int64_t batch, int64_t N, int heads,
                                    int head_dim, float scale, cudaStream_t s) {
  if (batch <= 0 || N <= 0) return cudaGetLastError();
  if (batch * heads > 0x7fffffff) return cudaErrorInvalidValue;
  const bf* q = reinterpret_cast<const bf*>(qkv);
  const bf* g = reinterpret_cast<const bf*>(dy);
  bf* d = reinterpret_cast<bf*>(dqkv);
  return head_dim == 32 ? launch<32>(q, g, d, batch, N, heads, scale, s) : launch<64>(q, g, d, batch, N, heads, scale, s);
}

}  // namespace mf::cuda::backward
