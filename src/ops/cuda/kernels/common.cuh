// Helpers shared by the kernel files (device side only; not part of the public header).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "core/env_switch.h"
#include "kernels.h"

namespace mf::cuda::kernels {

static_assert(sizeof(bf16) == sizeof(__nv_bfloat16), "bf16 must match __nv_bfloat16");

// The public bf16 is an opaque 16-bit struct; kernels see CUDA's type.
template <typename T> struct Dev { using type = T; };
template <> struct Dev<bf16> { using type = __nv_bfloat16; };
template <typename T> inline typename Dev<T>::type* dev(T* p) { return reinterpret_cast<typename Dev<T>::type*>(p); }
template <typename T> inline const typename Dev<T>::type* dev(const T* p) {
  return reinterpret_cast<const typename Dev<T>::type*>(p);
}

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// fp32 activation math. GELU is the exact erf form (PyTorch's default), computed with erff (no fast
// math anywhere in these files).
__device__ __forceinline__ float act_apply(const Act& a, float x) {
  switch (a.kind) {
    case ActKind::Identity: return x;
    case ActKind::GELU: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case ActKind::StarReLU: {
      const float r = x > 0.f ? x : 0.f;
      return fmaf(a.scale_p ? *a.scale_p : a.scale, r * r, a.bias_p ? *a.bias_p : a.bias);
    }
    case ActKind::SquaredReLU: {
      const float r = x > 0.f ? x : 0.f;
      return r * r;
    }
    case ActKind::ReLU: return x > 0.f ? x : 0.f;
    case ActKind::SiLU: return x / (1.f + expf(-x));
    case ActKind::SoftShrink: return x > a.threshold ? x - a.threshold : x < -a.threshold ? x + a.threshold : 0.f;
  }
  return x;
}

// `a` with StarReLU's device scalars read once, so that act_apply loads nothing per element (a loop
// that applies it to many elements otherwise issues two dependent global loads for each).
__device__ __forceinline__ Act act_resolved(Act a) {
  if (a.scale_p) a.scale = *a.scale_p, a.scale_p = nullptr;
  if (a.bias_p) a.bias = *a.bias_p, a.bias_p = nullptr;
  return a;
}

// act_apply for a kind fixed at compile time (KIND = int(ActKind::…); -1 reads a.kind at run time),
// with StarReLU's scalars already in `a` (act_resolved): no switch and no pointer test per element,
// which a kernel that activates every staged input or output otherwise pays (the depthwise
// forward's batchact). The same arithmetic as act_apply, so the same bits.
template <int KIND>
__device__ __forceinline__ float act_static(const Act& a, float x) {
  if constexpr (KIND < 0) {
    return act_apply(a, x);
  } else if constexpr (KIND == static_cast<int>(ActKind::Identity)) {
    return x;
  } else if constexpr (KIND == static_cast<int>(ActKind::StarReLU)) {
    const float r = x > 0.f ? x : 0.f;
    return fmaf(a.scale, r * r, a.bias);
  } else {
    Act b = a;
    b.kind = static_cast<ActKind>(KIND), b.scale_p = nullptr, b.bias_p = nullptr;
    return act_apply(b, x);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result. `scratch`
// holds 32 floats; the call ends with a barrier so scratch can be reused at once.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < warps ? scratch[lane] : 0.f;
  t = warp_sum(t);
  __syncthreads();
  return t;
}

// 16-byte accesses (8 bf16 or 4 floats a thread): scalar 2-byte loads leave much of the memory
// bandwidth unused, and the memory-bound kernels are pure traffic. Used when sizes and pointers allow.
template <typename T>
constexpr int kVec = 16 / sizeof(T);

// METAFORMER_CUDA_POOL_TAPS=unrolled (the default since the H200 A/B of 2026-12-07: poolformer_s12's bf16
// training +3.1 % and +1.4 %, batch-256 inference 5.03 → 4.81 ms; `loop` the other): the 3×3
// average pooling's taps unrolled, their loads issued together (conv.cu's pool_vec_at<3>, the
// backward's pool_minus_input_backward_i32_kernel<3>). Host code.
inline bool pool_taps_unrolled(int k) {
  return k == 3 && env_choice("METAFORMER_CUDA_POOL_TAPS", {"loop", "unrolled"}) != 0;
}
// 16 bytes already loaded (kVec<T> elements) as floats: kernels that issue several loads before
// using any (conv.cu's batched staging, the batched column sums) convert them here.
// The conversion works on the four 32-bit words as values: a bf16 is the upper half of the float
// with the same bits, a float its own bits. Reading the elements through a T* into the vector (as
// this did until 2026-12-06) let nvcc (11.8 and 13.0 alike) split the 16-byte load that fed it into
// eight 2-byte loads (ld.global.u16 in the PTX of every kernel built on load_vec): the same bytes
// from memory, but eight load instructions where one was meant (tools/ptx_loads.py counts them).
template <typename T>
__device__ __forceinline__ void unpack_vec(const uint4& u, float (&v)[kVec<T>]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      v[2 * j] = __uint_as_float(w[j] << 16);
      v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
    }
  } else {
    static_assert(std::is_same_v<T, float>, "16-byte vectors of float or bf16");
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = __uint_as_float(w[j]);
  }
}
template <typename T>
__device__ __forceinline__ void load_vec(const T* p, float (&v)[kVec<T>]) {
  unpack_vec<T>(*reinterpret_cast<const uint4*>(p), v);
}
template <typename T>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[kVec<T>]) {
  uint4 u;
  T* e = reinterpret_cast<T*>(&u);
#pragma unroll
  for (int j = 0; j < kVec<T>; ++j) e[j] = from_f<T>(v[j]);
  *reinterpret_cast<uint4*>(p) = u;
}
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
// V consecutive fp32 per-channel parameters (norm weights and biases, layer and residual scales) from
// p + c, or `fill` where p is null (an absent bias or scale). V / 4 16-byte loads through __ldg:
// element by element they were two or three scalar loads per activation element (23 loads a
// vector in the LayerNorm kernel, PTX of 2026-12-06), and a float4 read may be split into pieces
// as the activations' uint4 reads were. The parameters are read-only while any kernel runs (the
// optimizer writes them between kernels), which the non-coherent path needs. Callers check that
// p is 16-byte aligned (params_aligned16) and c a multiple of 4.
template <int V>
__device__ __forceinline__ void load_params(const float* p, int64_t c, float fill, float (&v)[V]) {
  static_assert(V % 4 == 0, "whole 16-byte vectors");
  if (!p) {
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = fill;
    return;
  }
  const float4* q = reinterpret_cast<const float4*>(p + c);
#pragma unroll
  for (int k = 0; k < V / 4; ++k) {
    const float4 f = __ldg(q + k);
    v[4 * k] = f.x, v[4 * k + 1] = f.y, v[4 * k + 2] = f.z, v[4 * k + 3] = f.w;
  }
}
// True when every non-null pointer is 16-byte aligned.
inline bool params_aligned16(std::initializer_list<const float*> ps) {
  for (const float* p : ps)
    if (p && !aligned16(p)) return false;
  return true;
}

// Raises `kernel`'s dynamic shared-memory limit to `bytes` when a launch needs more than `allowed`
// (the limit set so far, kept by the caller per kernel), so the attribute is set once, not per launch.
template <typename Kernel>
inline cudaError_t allow_dynamic_shared(Kernel kernel, size_t bytes, size_t& allowed) {
  if (bytes <= allowed) return cudaSuccess;
  const cudaError_t e =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (e == cudaSuccess) allowed = bytes;
  return e;
}

// Grid size for a grid-stride loop over n items with `block` threads (capped: each SM gets plenty).
inline unsigned grid_for(int64_t n, int block, int64_t cap = 65535LL * 8) {
  int64_t g = (n + block - 1) / block;
  if (g < 1) g = 1;
  if (g > cap) g = cap;
  return static_cast<unsigned>(g);
}

// GroupNorm-1 statistics (norms.cu, used by conv.cu's pool_branch too): each sample's `per` elements
// are cut into chunks of kGnChunk; the workspace holds [B, chunks, 3] partials (count, mean, M2) and
// then [B, 2] (mean, rstd).
constexpr int kGnThreads = 256, kGnPerThread = 8, kGnChunk = kGnThreads * kGnPerThread;
inline int64_t gn_chunks(int64_t per) { return (per + kGnChunk - 1) / kGnChunk; }
inline int64_t gn_partial_floats(int64_t B, int64_t per) { return B * gn_chunks(per) * 3; }
template <typename T>
cudaError_t group_norm1_stats_t(const T* x, float* mean_rstd, int64_t B, int64_t per, float eps, float* partial,
                                cudaStream_t s);
// Only the per-chunk partials ([B][gn_chunks(per)][3]: count, mean, M2), no merge.
template <typename T>
cudaError_t group_norm1_partials_t(const T* x, int64_t B, int64_t per, float* partial, cudaStream_t s);

// The tensor-core depthwise convolution (depthwise_mma.cu): bf16, stride 1, K×K with K ∈ {3, 5, 7};
// the arguments as depthwise_conv2d's; `tall`: 32×16 blocks of 16 channels on maps taller than 16
// rows (depthwise_mma.h). `supported` says whether it takes this geometry.
bool depthwise_mma_supported(int64_t B, int64_t C, int kh, int kw, int sh, int sw);
cudaError_t depthwise_mma(const bf16* x, int64_t xs, const float* w_hwc, const float* bias, bf16* y, int64_t ys,
                          int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, int k, int ph, int pw,
                          bool tall, Act pre, Act post, cudaStream_t s);

}  // namespace mf::cuda::kernels
