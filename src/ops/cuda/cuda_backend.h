// The "cuda" backend: every forward op of every zoo model on an NVIDIA GPU, in fp32 or with bf16
// activations (docs/cuda.md). GEMMs, 1×1 convolutions and the dense convolutions (through im2col)
// go to cuBLASLt with its bias, ReLU and (bf16) GELU epilogues, FFTs to cuFFT, everything else to CUDA kernels. Inputs on the CPU (a model's
// images, its parameters) are uploaded on first use and cached with the tensor's storage, like the
// CPU backend's derived weight layouts; outputs are Device::CUDA tensors from the memory pool.
// The backward passes of the MetaFormer families' ops run in fp32 (cuda_backward.h); the others fail
// with "not supported" (supports_backward says which).
#pragma once

#include <memory>
#include <string>

#include "ops/backend.h"

namespace mf {

namespace cuda {
// The derived-cache key of a tensor's bf16 copy on the GPU (cuda_backend.cpp's converted(); a weight's
// is rewritten by the AdamW step, cuda_optimizer.cpp). Here, in a header without CUDA's, for the tests.
inline constexpr const char* kBf16CopyKey = "cuda.as_bf16";
// The derived-cache key of a host tensor's fp32 upload (cuda_backend.cpp's dev()).
inline constexpr const char* kUploadKey = "cuda";
// The derived-cache key of an activation's GroupNorm partial statistics, written by the kernel that
// wrote it (PoolFormer's pool_branch) and taken by the next group_norm1 of it; any later write to the
// tensor through the backend drops them (cuda_backend.cpp's out()).
inline constexpr const char* kGn1PartialsKey = "cuda.gn1_partials";
}  // namespace cuda

// The backend object (created on first use: it selects the device and makes the context);
// throws mf::Error when there is no usable GPU or the precision is not available.
Backend& cuda_backend(Precision precision);
// "cuda:N" has been asked for; checked against the devices present.
void cuda_select_device(int index);
int cuda_device_count();
std::string cuda_device_description();
size_t cuda_peak_bytes();
std::string cuda_peak_blocks();
void cuda_reset_peak();
// The arithmetic of the backend's fp32 matrix products: "fp32" (exact), "tf32" or "bf16" (gemm.h).
void cuda_set_fp32_matmul(const std::string& mode);

}  // namespace mf
