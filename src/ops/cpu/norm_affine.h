// Pieces the fused block branches share with the standalone norm and residual kernels.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace mf::cpu {

// GroupNorm with one group as a per-sample, per-channel affine map: norm(x)[n, …, c] =
// x · a[n·C + c] + shift[n·C + c]. Reads x once from memory (chunked statistics, norms.cpp). `shift`
// may be null when only the scale is needed (PoolFormer's pool(n) − n, where the shift cancels).
void group_norm1_affine(const Tensor& x, const Tensor& w, const Tensor* b, float eps, float* a, float* shift);

// y[r] = x[r] ⊙ res_scale + branch[r] ⊙ layer_scale for `rows` rows of C values, either scale null
// for 1: the same arithmetic as CpuBackend::scaled_residual, on a block of rows. y may alias branch.
void scaled_residual_rows(const float* x, const float* res_scale, const float* branch, const float* layer_scale,
                          int64_t rows, int64_t C, float* y);

}  // namespace mf::cpu
