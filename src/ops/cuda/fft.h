// The spectral ops on the GPU through cuFFT (see Backend::rfft2 / irfft2 for the layouts).
#pragma once

#include <cstdint>

namespace mf::cuda {

// x [B, H, W, C] -> y [B, H, W/2+1, 2, C], orthonormal, middle columns times mid_scale
void rfft2(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, float mid_scale);
// x [B, H, W/2+1, 2, C] -> y [B, H, W, C], orthonormal, middle columns times mid_scale first
void irfft2(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, float mid_scale);

}  // namespace mf::cuda
