// The tensor-core product that the hand-written attention kernels issue directly (forward:
// attention.cu; backward: ../attention_backward_mma.cu), with PTX's documented fragment layouts:
// lane = 4g + t; A (16×16, row-major) rows g, g + 8 and columns 2t, 2t + 1, 2t + 8, 2t + 9; B (16×8,
// column-major) rows 2t, 2t + 1, 2t + 8, 2t + 9 of column g; D (16×8, fp32) rows g, g + 8 and columns
// 2t, 2t + 1. A register holds two bf16 neighbours along k, the first in its low half.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace mf::cuda::kernels {

// Two floats as one bf16x2 register: `lo` in the low half (the lower address).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// D = A·B + D for one m16n8k16 tile: A 16×16 bf16 (4 registers), B 16×8 bf16 (2), D 16×8 fp32 (4).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8 × 8 bf16 matrices from shared memory in one instruction (ldmatrix): lane l gives the address
// of row l % 8 of matrix l / 8 (16 bytes, 16-byte aligned), and register j receives matrix j's
// fragment: lane 4g + t gets its row g, columns 2t and 2t + 1. With `trans`, each matrix is read
// transposed: lane 4g + t gets rows 2t and 2t + 1 of column g, which is an mma A or B fragment taken
// across a row-major tile's rows (two neighbours along k that lie a row apart in memory).
template <bool trans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if constexpr (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}

}  // namespace mf::cuda::kernels
