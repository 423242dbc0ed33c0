// The CUDA backend's process-wide state: the selected device, its stream, the cuBLASLt handle and
// workspace, and the caching memory pool behind Device::CUDA tensors. Compiled by the host C++
// compiler (C++20), never by nvcc; the kernels it launches live in .cu files with raw-pointer
// interfaces (backend_kernels.h, kernels/kernels.h).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "core/error.h"
#include "ops/cuda/cuda_backend.h"  // kBf16CopyKey

namespace mf::cuda {

// Throws mf::Error naming the failed call and CUDA's message.
void check(cudaError_t status, const char* what);
void check_cublas(cublasStatus_t status, const char* what);
#define MF_CUDA(call) ::mf::cuda::check((call), #call)
#define MF_CUBLAS(call) ::mf::cuda::check_cublas((call), #call)
// After a kernel launch: a bad configuration surfaces here, not later.
#define MF_CUDA_LAUNCHED(what) ::mf::cuda::check(cudaGetLastError(), what)

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;  // cuBLASLt's, 32 MiB (Hopper wants at least that)
  size_t workspace_bytes = 0;
};

// Chooses the device before first use ("--device cuda:N"); throws when N does not exist.
void select_device(int index);
// The context, created on first use; throws a one-line mf::Error when there is no usable GPU.
Context& context();
int device_count();  // 0 when there is no driver or GPU
std::string device_description();
// Waits for the stream (before reading a host clock or host data).
void synchronize();

// METAFORMER_CUDA_UPLOAD_AHEAD=1 (a candidate, off by default until the device has measured it): the
// trainer has the next batch uploaded on a copy stream while the current step computes.
bool upload_ahead_enabled();
// Copies `bytes` from page-locked host memory at `src` (a pinned training batch) to `dst` on a
// stream of its own, once `after` (an event on the compute stream) has completed. Returns the event
// that completes with the copy (the caller owns it), or null when `src` is not a pinned block (then
// nothing was queued). The pinned block stays busy until the copy is done.
cudaEvent_t copy_ahead(void* dst, const void* src, size_t bytes, cudaEvent_t after);

// Memory pool statistics, in bytes.
size_t pool_bytes_in_use();
size_t pool_peak_bytes();
// The blocks held at that peak, by size (METAFORMER_CUDA_PEAK_BLOCKS=1; otherwise empty).
std::string pool_peak_blocks();
void pool_reset_peak();

}  // namespace mf::cuda
