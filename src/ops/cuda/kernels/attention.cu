// Fused multi-head attention forward, flash-style: each CTA owns a tile of queries of one (image,
// head), streams the keys and values through shared memory in tiles and keeps a running (online)
// softmax, so the N×N logits never reach global memory. Softmax and accumulation are fp32.
//
// Three kernels:
// - attn_scalar_kernel: any head_dim ≤ 128, float or bf16 storage, CUDA cores; one thread per
//   query (q and the output row in registers), keys in groups of 16 per softmax rescale.
// - attn_mma_d32_kernel: bf16 with head_dim 32 (every shipped CAFormer), tensor cores through
//   mma.sync.m16n8k16 (sm_80+ PTX, so Debian's CUDA 11.8 builds it too). Four warps of 16 queries
//   each; the score fragments of QKᵀ are reused in registers as the A operand of P·V (the
//   FlashAttention-2 layout identity), with P rounded to bf16 for that product.
// - attn_mma_d32_head_kernel (the default where N ≤ 208; METAFORMER_CUDA_ATTN_FWD=tiles turns it off):
//   the same warps' work, one CTA for all of a (image, head)'s queries, its keys staged once.
#include "common.cuh"
#include "core/env_switch.h"
#include "mma_sync.cuh"

namespace mf::cuda::kernels {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

// ---- generic CUDA-core kernel ----

constexpr int kScalarQueries = 64;  // threads per CTA = queries per CTA
constexpr int kScoreGroup = 16;     // keys per softmax rescale

template <typename T, int MAXD, int KT>
__global__ void __launch_bounds__(kScalarQueries)
    attn_scalar_kernel(const T* qkv, T* y, int64_t N, int heads, int D, float scale_log2) {
  __shared__ float Ks[KT][MAXD];
  __shared__ float Vs[KT][MAXD];
  const int64_t b = blockIdx.z;
  const int h = blockIdx.y;
  const int64_t A = int64_t(heads) * D, stride = 3 * A;
  const int64_t qi = int64_t(blockIdx.x) * kScalarQueries + threadIdx.x;
  const bool valid = qi < N;
  const T* base = qkv + b * N * stride + int64_t(h) * D;

  float q[MAXD], o[MAXD];
#pragma unroll
  for (int d = 0; d < MAXD; ++d) {
    q[d] = (valid && d < D) ? to_f(base[qi * stride + d]) * scale_log2 : 0.f;
    o[d] = 0.f;
  }
  float m = -INFINITY, l = 0.f;  // running max (log2 units) and sum

  for (int64_t k0 = 0; k0 < N; k0 += KT) {
    __syncthreads();  // the previous tile is no longer read
    for (int idx = threadIdx.x; idx < KT * MAXD; idx += kScalarQueries) {
      const int j = idx / MAXD, d = idx % MAXD;
      const int64_t key = k0 + j;
      const bool in = key < N && d < D;
      Ks[j][d] = in ? to_f(base[key * stride + A + d]) : 0.f;
      Vs[j][d] = in ? to_f(base[key * stride + 2 * A + d]) : 0.f;
    }
    __syncthreads();
    const int nk = N - k0 < KT ? static_cast<int>(N - k0) : KT;
    for (int j0 = 0; j0 < nk; j0 += kScoreGroup) {
      float s[kScoreGroup];
      float mx = m;
#pragma unroll
      for (int jj = 0; jj < kScoreGroup; ++jj) {
        const int j = j0 + jj;
        float acc = -INFINITY;
        if (j < nk) {
          acc = 0.f;
#pragma unroll
          for (int d = 0; d < MAXD; ++d) acc = fmaf(q[d], Ks[j][d], acc);
        }
        s[jj] = acc;
        mx = fmaxf(mx, acc);
      }
      const float corr = exp2f(m - mx);  // 0 on the first group (m = -inf)
      m = mx;
      l *= corr;
#pragma unroll
      for (int d = 0; d < MAXD; ++d) o[d] *= corr;
#pragma unroll
      for (int jj = 0; jj < kScoreGroup; ++jj) {
        const int j = j0 + jj;
        if (j < nk) {
          const float p = exp2f(s[jj] - m);
          l += p;
#pragma unroll
          for (int d = 0; d < MAXD; ++d) o[d] = fmaf(p, Vs[j][d], o[d]);
        }
      }
    }
  }
  if (!valid) return;
  const float inv = 1.f / l;
  T* out = y + (b * N + qi) * A + int64_t(h) * D;
#pragma unroll
  for (int d = 0; d < MAXD; ++d)
    if (d < D) out[d] = from_f<T>(o[d] * inv);
}

template <typename T, int MAXD, int KT>
void launch_scalar(const T* qkv, T* y, int64_t B, int64_t N, int heads, int D, float scale, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>((N + kScalarQueries - 1) / kScalarQueries), static_cast<unsigned>(heads),
                  static_cast<unsigned>(B));
  attn_scalar_kernel<T, MAXD, KT><<<grid, kScalarQueries, 0, s>>>(qkv, y, N, heads, D, scale * kLog2e);
}

template <typename T>
cudaError_t attention_scalar(const T* qkv, T* y, int64_t B, int64_t N, int heads, int D, float scale, cudaStream_t s) {
  if (D <= 8) launch_scalar<T, 8, 64>(qkv, y, B, N, heads, D, scale, s);
  else if (D <= 16) launch_scalar<T, 16, 64>(qkv, y, B, N, heads, D, scale, s);
  else if (D <= 32) launch_scalar<T, 32, 64>(qkv, y, B, N, heads, D, scale, s);
  else if (D <= 64) launch_scalar<T, 64, 64>(qkv, y, B, N, heads, D, scale, s);
  else launch_scalar<T, 128, 32>(qkv, y, B, N, heads, D, scale, s);
  return cudaGetLastError();
}

// ---- bf16 tensor-core kernels, head_dim 32 ----

constexpr int kMmaWarps = 4, kMmaQueries = 16 * kMmaWarps, kMmaKeys = 64, kD = 32;
constexpr int kKPad = kD + 8;         // K tile row (bf16): 80 bytes, conflict-free fragment loads
constexpr int kVPad = kMmaKeys + 8;   // transposed V tile row (bf16)
constexpr int kHeadMaxN = 208;        // the whole-head kernel: up to 13 warps of 16 queries (N = 196)

// One warp's 16 query rows (row_lo = q0 + g, row_hi = q0 + g + 8): their Q fragments, output
// fragments and running max and sum. Both kernels run these functions, so their sums are the same.
struct WarpRows {
  uint32_t qa[2][4];  // Q fragments (two k-steps of 16 dims), zero for rows past N
  float o[4][4];      // output fragments: 4 tiles of 8 dims
  float m_lo, m_hi, l_lo, l_hi;
};

__device__ __forceinline__ void load_rows(WarpRows& r, const __nv_bfloat16* base, int64_t stride, int64_t row_lo,
                                          int64_t row_hi, int64_t N, int t) {
  const uint32_t zero = 0;
  auto ld = [&](int64_t row, int dim) -> uint32_t {
    return row < N ? *reinterpret_cast<const uint32_t*>(base + row * stride + dim) : zero;
  };
#pragma unroll
  for (int ks = 0; ks < 2; ++ks) {
    r.qa[ks][0] = ld(row_lo, ks * 16 + 2 * t);
    r.qa[ks][1] = ld(row_hi, ks * 16 + 2 * t);
    r.qa[ks][2] = ld(row_lo, ks * 16 + 2 * t + 8);
    r.qa[ks][3] = ld(row_hi, ks * 16 + 2 * t + 8);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) r.o[i][j] = 0.f;
  r.m_lo = r.m_hi = -INFINITY;
  r.l_lo = r.l_hi = 0.f;
}

// Keys k0 .. k0 + 63 into the warp's rows: Ks holds their rows (kKPad apart) from the tile's first
// key, Vt their values transposed, [dim][key] with rows ldv apart, from the tile's first key.
__device__ __forceinline__ void attend_tile(WarpRows& r, const __nv_bfloat16* Ks, const __nv_bfloat16* Vt, int ldv,
                                            int64_t k0, int64_t N, float scale_log2, int g, int t) {
  // S = Q Kᵀ: 8 tiles of 8 keys.
  float sc[8][4];
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
    if (k0 + nt * 8 >= N) continue;  // masked below
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      const uint32_t b0 = *reinterpret_cast<const uint32_t*>(Ks + (nt * 8 + g) * kKPad + ks * 16 + 2 * t);
      const uint32_t b1 = *reinterpret_cast<const uint32_t*>(Ks + (nt * 8 + g) * kKPad + ks * 16 + 2 * t + 8);
      mma_bf16(sc[nt], r.qa[ks], b0, b1);
    }
  }
  // Scale into log2 units, mask keys past N, and the running max of rows g and g + 8 (shared by
  // the 4 threads of a row group).
  float mx_lo = r.m_lo, mx_hi = r.m_hi;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t key = k0 + nt * 8 + 2 * t + (e & 1);
      sc[nt][e] = key < N ? sc[nt][e] * scale_log2 : -INFINITY;
      if (e < 2) mx_lo = fmaxf(mx_lo, sc[nt][e]);
      else mx_hi = fmaxf(mx_hi, sc[nt][e]);
    }
#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
  }
  const float c_lo = exp2f(r.m_lo - mx_lo), c_hi = exp2f(r.m_hi - mx_hi);
  r.m_lo = mx_lo, r.m_hi = mx_hi;
  r.l_lo *= c_lo, r.l_hi *= c_hi;
#pragma unroll
  for (int i = 0; i < 4; ++i) r.o[i][0] *= c_lo, r.o[i][1] *= c_lo, r.o[i][2] *= c_hi, r.o[i][3] *= c_hi;

  // P = exp2(S − m); its fragments of key tiles 2k, 2k+1 are the A operand of k-step k of P·V.
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    if (k0 + kk * 16 >= N) break;  // probabilities 0 from here
    uint32_t pa[4];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int nt = 2 * kk + half;
      const float p0 = exp2f(sc[nt][0] - r.m_lo), p1 = exp2f(sc[nt][1] - r.m_lo);
      const float p2 = exp2f(sc[nt][2] - r.m_hi), p3 = exp2f(sc[nt][3] - r.m_hi);
      r.l_lo += p0 + p1;
      r.l_hi += p2 + p3;
      pa[half * 2 + 0] = pack_bf16(p0, p1);
      pa[half * 2 + 1] = pack_bf16(p2, p3);
    }
#pragma unroll
    for (int dt = 0; dt < 4; ++dt) {
      const uint32_t b0 = *reinterpret_cast<const uint32_t*>(Vt + (dt * 8 + g) * ldv + kk * 16 + 2 * t);
      const uint32_t b1 = *reinterpret_cast<const uint32_t*>(Vt + (dt * 8 + g) * ldv + kk * 16 + 2 * t + 8);
      mma_bf16(r.o[dt], pa, b0, b1);
    }
  }
}

// Row sums over the 4 threads of each row group, then normalise and store (and the log-sum-exps).
__device__ __forceinline__ void store_rows(WarpRows& r, __nv_bfloat16* y, float* lse, int64_t b, int h, int heads,
                                           int64_t N, int64_t A, int64_t row_lo, int64_t row_hi, int t) {
#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    r.l_lo += __shfl_xor_sync(0xffffffffu, r.l_lo, off);
    r.l_hi += __shfl_xor_sync(0xffffffffu, r.l_hi, off);
  }
  const float inv_lo = 1.f / r.l_lo, inv_hi = 1.f / r.l_hi;
  if (lse && t == 0) {  // natural log of Σ exp(s · scale): m and l are in log2 units
    constexpr float kLn2 = 0.69314718055994531f;
    float* row = lse + (b * heads + h) * N;
    if (row_lo < N) row[row_lo] = (r.m_lo + log2f(r.l_lo)) * kLn2;
    if (row_hi < N) row[row_hi] = (r.m_hi + log2f(r.l_hi)) * kLn2;
  }
#pragma unroll
  for (int dt = 0; dt < 4; ++dt) {
    const int dim = dt * 8 + 2 * t;
    if (row_lo < N)
      *reinterpret_cast<uint32_t*>(y + (b * N + row_lo) * A + int64_t(h) * kD + dim) =
          pack_bf16(r.o[dt][0] * inv_lo, r.o[dt][1] * inv_lo);
    if (row_hi < N)
      *reinterpret_cast<uint32_t*>(y + (b * N + row_hi) * A + int64_t(h) * kD + dim) =
          pack_bf16(r.o[dt][2] * inv_hi, r.o[dt][3] * inv_hi);
  }
}

// Keys first .. first + count − 1 (zeros past N) into Ks (rows of kKPad) and Vt (transposed, rows of
// ldv), as 16-byte vectors, by all the block's threads.
__device__ __forceinline__ void stage_keys(__nv_bfloat16* Ks, __nv_bfloat16* Vt, int ldv, const __nv_bfloat16* base,
                                           int64_t stride, int64_t A, int64_t first, int count, int64_t N) {
  for (int idx = threadIdx.x; idx < count * (kD / 8); idx += blockDim.x) {
    const int j = idx / (kD / 8), part = idx % (kD / 8);
    const int64_t key = first + j;
    uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
    if (key < N) {
      kv = *reinterpret_cast<const uint4*>(base + key * stride + A + part * 8);
      vv = *reinterpret_cast<const uint4*>(base + key * stride + 2 * A + part * 8);
    }
    *reinterpret_cast<uint4*>(Ks + j * kKPad + part * 8) = kv;
    const __nv_bfloat16* ve = reinterpret_cast<const __nv_bfloat16*>(&vv);
#pragma unroll
    for (int e = 0; e < 8; ++e) Vt[(part * 8 + e) * ldv + j] = ve[e];
  }
}

// Four warps of 16 queries a CTA; the keys stream through shared memory 64 at a time.
__global__ void __launch_bounds__(kMmaWarps * 32)
    attn_mma_d32_kernel(const __nv_bfloat16* qkv, __nv_bfloat16* y, int64_t N, int heads, float scale_log2,
                        float* lse) {
  __shared__ __align__(16) __nv_bfloat16 Ks[kMmaKeys][kKPad];
  __shared__ __align__(16) __nv_bfloat16 Vt[kD][kVPad];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;  // mma fragment coordinates: row group, thread in group
  const int64_t b = blockIdx.z;
  const int h = blockIdx.y;
  const int64_t A = int64_t(heads) * kD, stride = 3 * A;
  const __nv_bfloat16* base = qkv + b * N * stride + int64_t(h) * kD;
  const int64_t q0 = int64_t(blockIdx.x) * kMmaQueries + warp * 16;
  const int64_t row_lo = q0 + g, row_hi = q0 + g + 8;
  // Work a CAFormer map does not fill is skipped, warp-uniformly, with the same bits out: a warp whose
  // 16 queries all lie past N only helps to load the tiles (N = 196: 3 of the last CTA's 4 warps), and
  // key tiles of 8 (QKᵀ) and 16 (P·V) past N are not multiplied (N = 196: the fourth tile of 64 keys
  // has 4). Their products were masked to −∞ and their probabilities 0 before, so nothing changes.
  const bool active = q0 < N;
  WarpRows r;
  load_rows(r, base, stride, row_lo, row_hi, N, t);
  for (int64_t k0 = 0; k0 < N; k0 += kMmaKeys) {
    __syncthreads();
    stage_keys(&Ks[0][0], &Vt[0][0], kVPad, base, stride, A, k0, kMmaKeys, N);
    __syncthreads();
    if (active) attend_tile(r, &Ks[0][0], &Vt[0][0], kVPad, k0, N, scale_log2, g, t);
  }
  if (active) store_rows(r, y, lse, b, h, heads, N, A, row_lo, row_hi, t);
}

// METAFORMER_CUDA_ATTN_FWD=head (the default since the H200 A/B of 2026-12-07: caformer_s18's bf16
// training +1.5 % and +0.7 % in two rounds, batch-256 inference 12.73 → 12.33 ms; `tiles` the other): one CTA a
// (sample, head) for N ≤ 208, ceil(N / 16) warps of 16 queries, with every key and value staged into
// shared memory once (dynamic: 37 KB at N = 196) behind one barrier. The tiled kernel's CTAs (four for
// CAFormer's 196 tokens) each stage all of the head's keys, a tile at a time between two barriers,
// and its last CTA holds 4 queries in 64. Each warp runs the tiled kernel's functions on the same
// tiles in the same order: the same bits. 72 registers (4 bytes spilled) keep two CTAs of 13 warps an
// SM, as many warps as the tiled kernel's six CTAs of 4 at its 78.
__global__ void __launch_bounds__(kHeadMaxN / 16 * 32, 2)
    attn_mma_d32_head_kernel(const __nv_bfloat16* qkv, __nv_bfloat16* y, int64_t N, int heads, float scale_log2,
                             float* lse) {
  extern __shared__ __align__(16) unsigned char attn_head_smem[];
  const int Np = static_cast<int>((N + kMmaKeys - 1) / kMmaKeys * kMmaKeys), ldv = Np + 8;
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(attn_head_smem);
  __nv_bfloat16* Vt = Ks + Np * kKPad;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t b = blockIdx.y;
  const int h = blockIdx.x;
  const int64_t A = int64_t(heads) * kD, stride = 3 * A;
  const __nv_bfloat16* base = qkv + b * N * stride + int64_t(h) * kD;
  const int64_t q0 = int64_t(warp) * 16;
  const int64_t row_lo = q0 + g, row_hi = q0 + g + 8;
  WarpRows r;
  load_rows(r, base, stride, row_lo, row_hi, N, t);
  stage_keys(Ks, Vt, ldv, base, stride, A, 0, Np, N);
  __syncthreads();
  for (int64_t k0 = 0; k0 < N; k0 += kMmaKeys)
    attend_tile(r, Ks + k0 * kKPad, Vt + k0, ldv, k0, N, scale_log2, g, t);
  store_rows(r, y, lse, b, h, heads, N, A, row_lo, row_hi, t);
}

size_t head_kernel_smem(int64_t N) {
  const int64_t Np = (N + kMmaKeys - 1) / kMmaKeys * kMmaKeys;
  return static_cast<size_t>(Np * kKPad + kD * (Np + 8)) * sizeof(__nv_bfloat16);
}

bool attention_by_heads(int64_t N) {
  return N <= kHeadMaxN && env_choice("METAFORMER_CUDA_ATTN_FWD", {"tiles", "head"}) != 0;
}

}  // namespace

cudaError_t attention(const float* qkv, float* y, int64_t B, int64_t N, int heads, int head_dim, float scale,
                      cudaStream_t s) {
  if (head_dim < 1 || head_dim > 128 || heads < 1 || heads > 65535 || B > 65535) return cudaErrorInvalidValue;
  if (B <= 0 || N <= 0) return cudaSuccess;
  return attention_scalar(qkv, y, B, N, heads, head_dim, scale, s);
}

// The tensor-core kernel reads 16-byte vectors of K and V and 4-byte pairs of Q, and writes pairs.
bool attention_writes_lse(const bf16* qkv, const bf16* y, int head_dim) {
  return head_dim == kD && reinterpret_cast<uintptr_t>(qkv) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 4 == 0;
}

cudaError_t attention(const bf16* qkv, bf16* y, int64_t B, int64_t N, int heads, int head_dim, float scale,
                      cudaStream_t s, float* lse) {
  if (head_dim < 1 || head_dim > 128 || heads < 1 || heads > 65535 || B > 65535) return cudaErrorInvalidValue;
  if (B <= 0 || N <= 0) return cudaSuccess;
  if (attention_writes_lse(qkv, y, head_dim)) {
    if (attention_by_heads(N)) {
      const int warps = static_cast<int>((N + 15) / 16);
      attn_mma_d32_head_kernel<<<dim3(static_cast<unsigned>(heads), static_cast<unsigned>(B)), warps * 32,
                                 head_kernel_smem(N), s>>>(dev(qkv), dev(y), N, heads, scale * kLog2e, lse);
      return cudaGetLastError();
    }
    const dim3 grid(static_cast<unsigned>((N + kMmaQueries - 1) / kMmaQueries), static_cast<unsigned>(heads),
                    static_cast<unsigned>(B));
    attn_mma_d32_kernel<<<grid, kMmaWarps * 32, 0, s>>>(dev(qkv), dev(y), N, heads, scale * kLog2e, lse);
    return cudaGetLastError();
  }
  if (lse) return cudaErrorInvalidValue;
  return attention_scalar(dev(qkv), dev(y), B, N, heads, head_dim, scale, s);
}

}  // namespace mf::cuda::kernels
