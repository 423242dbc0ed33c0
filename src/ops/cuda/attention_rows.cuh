// The softmax rows' statistics of the tensor-core attention backward kernels (the key-tile kernel of
// attention_backward_wmma.cu and attention_backward_mma.cu), gathered online over the key tiles:
// the 16 keys of a tile for one row lie on the 4 lanes 4g … 4g + 3, 4 each.
#pragma once

#include <cuda_runtime.h>

namespace mf::cuda::backward {

// One key tile's 4 scaled scores of a row on this lane (−∞ where the key is padding) and their dP:
// the row's running max m (the same on its 4 lanes), and this lane's share of the normaliser l and of
// Σ exp(s − m) · dP, both rescaled when m grows. Every tile holds a real key, so m stays finite.
__device__ __forceinline__ void row_stats_update(const float (&s)[4], const float (&dp)[4], float& m, float& l,
                                                 float& d) {
  float tmax = -INFINITY;
#pragma unroll
  for (int e = 0; e < 4; ++e) tmax = fmaxf(tmax, s[e]);
  tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
  tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
  const float m_new = fmaxf(m, tmax);
  const float rescale = expf(m - m_new);
  l *= rescale;
  d *= rescale;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float p = s[e] == -INFINITY ? 0.f : expf(s[e] - m_new);
    l += p;
    d = fmaf(p, dp[e], d);
  }
  m = m_new;
}

// After the last key tile: l and d summed over the row's 4 lanes, and the first of them writes row
// i's m, 1 / l and D = Σ P ⊙ dP = d / l into `stats` ([3][Np]).
__device__ __forceinline__ void row_stats_store(float m, float l, float d, float* stats, int Np, int i, int lane) {
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  d += __shfl_xor_sync(0xffffffffu, d, 1);
  d += __shfl_xor_sync(0xffffffffu, d, 2);
  if ((lane & 3) == 0) {
    stats[i] = m;
    stats[Np + i] = 1.f / l;
    stats[2 * Np + i] = d / l;
  }
}

}  // namespace mf::cuda::backward
