// Attention's backward pass without the N×N matrices in global memory (the "fused" variant of
// backward_kernels.h's attention_backward_fused; the materialised one stays the default until the
// device A/B, tools/device/cuda_check.sh step attnab, has checked and timed this one).
//
// Flash-attention's recomputation, written for CAFormer's small token counts (49 and 196 tokens,
// head size 32): P is recomputed from q and k wherever it is needed instead of being stored.
//   kernel 1, one warp per query row (b, h, i), lanes over the head's channels:
//     pass 1 (online, one exp per key): m_i = max_j s_ij, l_i = Σ_j exp(s_ij − m_i) with
//             s_ij = scale · q_i·k_j, and D_i = Σ_j P_ij dP_ij with dP_ij = dO_i·v_j;
//     pass 2: dq_i = scale · Σ_j P_ij (dP_ij − D_i) k_j; (m_i, l_i, D_i) kept for kernel 2.
//   kernel 2, one warp per key row (b, h, j):
//     dk_j = scale · Σ_i dS_ij q_i and dv_j = Σ_i P_ij dO_i, with P and dS recomputed from the stats.
// Every sum runs in double in a fixed order (a warp's butterfly, then the loop order), with no
// atomics, so the gradients are deterministic like every other backward pass of the backend.
#include "ops/cuda/backward_kernels.h"

#include <cuda_runtime.h>

namespace mf::cuda::backward {
namespace {

constexpr int kWarpsPerBlock = 8;

// The same value on every lane (a butterfly): the lanes of a warp then agree bit for bit.
__device__ double lanes_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// DPL channels per lane (the head size d ≤ 32 · DPL); lane l holds channels l, l + 32, ...
template <int DPL>
struct HeadRow {
  double x[DPL];
  __device__ void load(const float* p, int d, int lane) {
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int c = lane + 32 * k;
      x[k] = c < d ? static_cast<double>(p[c]) : 0.0;
    }
  }
  __device__ double dot(const float* p, int d, int lane) const {
    double s = 0;
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int c = lane + 32 * k;
      if (c < d) s += x[k] * static_cast<double>(p[c]);
    }
    return lanes_sum(s);
  }
};

template <int DPL>
__global__ void attention_dq_kernel(const float* qkv, const float* dy, float* dqkv, double* stats, int64_t rows,
                                    int64_t N, int heads, int d, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + (threadIdx.x >> 5);  // (b·heads + h)·N + i
  if (row >= rows) return;
  const int64_t A = static_cast<int64_t>(heads) * d;
  const int64_t i = row % N, bh = row / N, h = bh % heads, b = bh / heads;
  const float* base = qkv + b * N * 3 * A + h * d;  // q of token 0; k at +A, v at +2A; tokens 3A apart
  HeadRow<DPL> q, go;
  q.load(base + i * 3 * A, d, lane);
  go.load(dy + (b * N + i) * A + h * d, d, lane);
  // Pass 1, online over the keys: the running max m, l = Σ_j e^{s_j − m} and Dn = Σ_j e^{s_j − m} dP_j,
  // both rescaled by e^{m_old − m_new} whenever the max grows, so D_i = Dn / l comes out of the same
  // sweep as the softmax statistics (no separate pass recomputing P), with one exp per key: the new key
  // is either the new max (its own weight is e^0 = 1 and only the old sums need e^{m − s}) or not (its
  // weight is e^{s − m} and the sums stay). s is a butterfly result, identical on every lane, so the
  // branch is warp-uniform. With m = −∞ at the first key, e^{−∞} = 0 clears the (zero) sums.
  double m = -INFINITY, l = 0, Dn = 0;
  for (int64_t j = 0; j < N; ++j) {
    const float* kj = base + j * 3 * A + A;
    const double s = q.dot(kj, d, lane) * scale;
    const double dp = go.dot(kj + A, d, lane);
    if (s > m) {
      const double c = exp(m - s);
      l = l * c + 1.0;
      Dn = Dn * c + dp;
      m = s;
    } else {
      const double e = exp(s - m);
      l += e;
      Dn += e * dp;
    }
  }
  const double D = Dn / l;
  double acc[DPL];
#pragma unroll
  for (int k = 0; k < DPL; ++k) acc[k] = 0;
  for (int64_t j = 0; j < N; ++j) {
    const float* kj = base + j * 3 * A + A;
    const double p = exp(q.dot(kj, d, lane) * scale - m) / l;
    const double ds = p * (go.dot(base + j * 3 * A + 2 * A, d, lane) - D);
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int c = lane + 32 * k;
      if (c < d) acc[k] += ds * static_cast<double>(kj[c]);
    }
  }
  float* dq = dqkv + (b * N + i) * 3 * A + h * d;
#pragma unroll
  for (int k = 0; k < DPL; ++k) {
    const int c = lane + 32 * k;
    if (c < d) dq[c] = static_cast<float>(acc[k] * scale);
  }
  if (lane == 0) {
    stats[row * 3 + 0] = m;
    stats[row * 3 + 1] = l;
    stats[row * 3 + 2] = D;
  }
}

template <int DPL>
__global__ void attention_dkdv_kernel(const float* qkv, const float* dy, float* dqkv, const double* stats,
                                      int64_t rows, int64_t N, int heads, int d, float scale) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + (threadIdx.x >> 5);  // (b·heads + h)·N + j
  if (row >= rows) return;
  const int64_t A = static_cast<int64_t>(heads) * d;
  const int64_t j = row % N, bh = row / N, h = bh % heads, b = bh / heads;
  const float* base = qkv + b * N * 3 * A + h * d;
  const float* gbase = dy + b * N * A + h * d;
  const double* st = stats + bh * N * 3;
  HeadRow<DPL> kj, vj;
  kj.load(base + j * 3 * A + A, d, lane);
  vj.load(base + j * 3 * A + 2 * A, d, lane);
  double dk[DPL], dv[DPL];
#pragma unroll
  for (int k = 0; k < DPL; ++k) dk[k] = dv[k] = 0;
  for (int64_t i = 0; i < N; ++i) {
    const float* qi = base + i * 3 * A;
    const float* gi = gbase + i * A;
    const double p = exp(kj.dot(qi, d, lane) * scale - st[i * 3 + 0]) / st[i * 3 + 1];
    const double ds = p * (vj.dot(gi, d, lane) - st[i * 3 + 2]);
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int c = lane + 32 * k;
      if (c < d) {
        dk[k] += ds * static_cast<double>(qi[c]);
        dv[k] += p * static_cast<double>(gi[c]);
      }
    }
  }
  float* out = dqkv + (b * N + j) * 3 * A + h * d;
#pragma unroll
  for (int k = 0; k < DPL; ++k) {
    const int c = lane + 32 * k;
    if (c < d) {
      out[A + c] = static_cast<float>(dk[k] * scale);
      out[2 * A + c] = static_cast<float>(dv[k]);
    }
  }
}

template <int DPL>
void launch(const float* qkv, const float* dy, float* dqkv, int64_t rows, int64_t N, int heads, int d, float scale,
            double* stats, cudaStream_t s) {
  const unsigned blocks = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  attention_dq_kernel<DPL><<<blocks, 32 * kWarpsPerBlock, 0, s>>>(qkv, dy, dqkv, stats, rows, N, heads, d, scale);
  attention_dkdv_kernel<DPL><<<blocks, 32 * kWarpsPerBlock, 0, s>>>(qkv, dy, dqkv, stats, rows, N, heads, d, scale);
}

}  // namespace

bool attention_backward_fused_supports(int head_dim) { return head_dim >= 1 && head_dim <= 128; }

int64_t attention_backward_fused_work(int64_t batch, int64_t N, int heads) { return batch * heads * N * 3; }

cudaError_t attention_backward_fused(const float* qkv, const float* dy, float* dqkv, int64_t batch, int64_t N,
                                     int heads, int head_dim, float scale, double* work, cudaStream_t s) {
  const int64_t rows = batch * heads * N;
  if (rows <= 0 || head_dim <= 0) return cudaGetLastError();
  if (head_dim <= 32) {
    launch<1>(qkv, dy, dqkv, rows, N, heads, head_dim, scale, work, s);
  } else if (head_dim <= 64) {
    launch<2>(qkv, dy, dqkv, rows, N, heads, head_dim, scale, work, s);
  } else {
    launch<4>(qkv, dy, dqkv, rows, N, heads, head_dim, scale, work, s);
  }
  return cudaGetLastError();
}

}  // namespace mf::cuda::backward
