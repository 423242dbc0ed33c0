// Pieces the fused block branches share with the standalone norm and residual kernels.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace mf::cpu {

// GroupNorm with one group as a per-sample, per-channel affine map: norm(x)[n, …, c] =
// x · a[n·C + c] + shift[n·C + c]. Reads x once from memory (chunked statistics, norms.cpp). `shift`
// may be null when only the scale is needed (PoolFormer's pool(n) − n, where the shift cancels).
void group_norm1_affine(const Tensor& x, const Tensor& w, const Tensor* b, float eps, float* a, float* shift);

// out[i] = x[r0 + i] · a[n] + shift[n] for `rows` rows of C values starting at row r0 of x, n being
// row r0 + i's sample (`pixels` rows per sample): GroupNorm applied to a block of rows, which may
// span two samples. `out` is indexed from 0.
void group_norm1_apply_rows(const float* x, int64_t r0, int64_t rows, int64_t pixels, int64_t C, const float* a,
                            const float* shift, float* out);

// y[r] = x[r] ⊙ res_scale + branch[r] ⊙ layer_scale for `rows` rows of C values, either scale null
// for 1: the same arithmetic as CpuBackend::scaled_residual, on a block of rows. y may alias branch.
void scaled_residual_rows(const float* x, const float* res_scale, const float* branch, const float* layer_scale,
                          int64_t rows, int64_t C, float* y);

}  // namespace mf::cpu
