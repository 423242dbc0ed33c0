// gemm.cpp's timed choice among cuBLASLt's answers compares each answer's output with the first
// answer's on the device (gemm_pick.cu; raw pointers, compiled by nvcc).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace mf::cuda {

// Counts into *count_dev (device memory) the 4-byte words (and trailing bytes) where a and b differ,
// in stream order; 0 means the same bits.
cudaError_t count_differing(const void* a, const void* b, size_t bytes, unsigned long long* count_dev,
                            cudaStream_t s);

}  // namespace mf::cuda
