// The CPU backend's one GEMM entry point (oneDNN matmul): rows of activations times a layer's
// weight, with optional bias and fused activation, operands in fp32 or bf16. linear and the fused
// MLP both go through it, so primitives and reordered weights are cached in one place.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/op_kind.h"

namespace mf::cpu {

struct GemmRows {
  const void* src;                 // [rows, K], fp32, or bf16 when `bf16`
  bool bf16;                       // operand precision (src and the cached weight)
  int64_t rows;
  const Tensor& w;                 // [N, K] (or [N, K, 1, 1]), fp32 parameter; converted and cached
  const Tensor* b;                 // [N] or null
  const Activation* act;           // fused into the output, or null
  void* dst;                       // [rows, N], fp32, or bf16 when `dst_bf16`
  bool dst_bf16;
};

// dst = act(src · wᵀ + b)
void gemm_rows(const GemmRows& g);

// Whether gemm_rows can apply this activation to its output (as oneDNN post-ops): GELU (erf),
// ReLU, SiLU, squared ReLU, StarReLU.
bool gemm_fuses(ActKind k);

}  // namespace mf::cpu
