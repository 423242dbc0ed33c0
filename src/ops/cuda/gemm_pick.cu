// The device half of gemm.cpp's timed choice among cuBLASLt's answers (METAFORMER_CUDA_GEMM_PICK):
// whether two outputs have the same bits, without copying them to the host.
#include "ops/cuda/gemm_pick.h"

namespace mf::cuda {
namespace {

__global__ void count_differing_words_kernel(const uint32_t* a, const uint32_t* b, size_t words,
                                             unsigned long long* count) {
  unsigned long long mine = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < words; i += size_t(gridDim.x) * blockDim.x)
    mine += a[i] != b[i];
  if (mine) atomicAdd(count, mine);  // a count, not a value: its order does not matter
}

__global__ void count_differing_bytes_kernel(const unsigned char* a, const unsigned char* b, size_t n,
                                             unsigned long long* count) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i < n && a[i] != b[i]) atomicAdd(count, 1ull);
}

}  // namespace

cudaError_t count_differing(const void* a, const void* b, size_t bytes, unsigned long long* count_dev,
                            cudaStream_t s) {
  cudaError_t e = cudaMemsetAsync(count_dev, 0, sizeof(unsigned long long), s);
  if (e != cudaSuccess) return e;
  const size_t words = bytes / 4, tail = bytes % 4;
  if (words) {
    const unsigned blocks = static_cast<unsigned>(std::min<size_t>((words + 255) / 256, 4096));
    count_differing_words_kernel<<<blocks, 256, 0, s>>>(static_cast<const uint32_t*>(a),
                                                        static_cast<const uint32_t*>(b), words, count_dev);
  }
  if (tail)
    count_differing_bytes_kernel<<<1, 4, 0, s>>>(static_cast<const unsigned char*>(a) + 4 * words,
                                                 static_cast<const unsigned char*>(b) + 4 * words, tail, count_dev);
  return cudaGetLastError();
}

}  // namespace mf::cuda
