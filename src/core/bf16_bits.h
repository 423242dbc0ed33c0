// bfloat16 as the top 16 bits of an fp32 bit pattern: the scalar conversions, in one place for the
// host code (checkpoints, the bf16 all-reduce) and for the GPU kernels whose bodies the host also
// runs (ops/cuda/kernels/depthwise_mma.h). No CUDA header needed; under nvcc they are device
// functions too.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MF_BF16_HD __host__ __device__ __forceinline__
#else
#define MF_BF16_HD inline
#endif

namespace mf {

// Exact: bf16 is the upper half of an fp32.
MF_BF16_HD float bf16_bits_to_float(uint16_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(uint32_t(b) << 16);
#else
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Round to nearest, ties to even (as __float2bfloat16_rn and PyTorch); a NaN stays a quiet NaN.
MF_BF16_HD uint16_t float_to_bf16_bits(float f) {
#if defined(__CUDA_ARCH__)
  uint32_t u = __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
#endif
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

}  // namespace mf
