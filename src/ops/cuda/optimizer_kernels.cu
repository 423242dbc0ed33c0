// The optimizer's multi-tensor kernels: see optimizer_kernels.h. One block of 256 threads per chunk
// of 4096 elements, 16 elements a thread, grid-stride over the chunk table when it is long.
#include "ops/cuda/optimizer_kernels.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace mf::cuda::optim {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t chunks) { return static_cast<unsigned>(chunks < 65535 * 8 ? (chunks > 0 ? chunks : 1) : 65535 * 8); }

#define MF_FOR_CHUNK(c, num)                                                              \
  for (int64_t c = blockIdx.x; c < (num); c += gridDim.x)

__device__ inline int64_t chunk_end(const TensorSlot& t, int64_t start) {
  const int64_t e = start + kOptimizerChunk;
  return e < t.n ? e : t.n;
}

__global__ void adamw_kernel(const TensorSlot* slots, const Chunk* chunks, int64_t num, AdamW s) {
  MF_FOR_CHUNK(c, num) {
    const TensorSlot t = slots[chunks[c].slot];
    const int64_t end = chunk_end(t, chunks[c].start);
    const float decay = t.flag ? s.decay_factor : 1.f;
    for (int64_t i = chunks[c].start + threadIdx.x; i < end; i += blockDim.x) {
      const float g = t.b[i];
      float w = __fmul_rn(t.a[i], decay);
      float m = t.c[i];
      m = __fadd_rn(m, __fmul_rn(__fsub_rn(g, m), s.one_minus_beta1));
      const float v = __fadd_rn(__fmul_rn(t.d[i], s.beta2), __fmul_rn(__fmul_rn(g, g), s.one_minus_beta2));
      const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bias_correction2_sqrt), s.eps);
      w = __fsub_rn(w, __fmul_rn(s.step_size, __fdiv_rn(m, denom)));
      t.a[i] = w;
      t.c[i] = m;
      t.d[i] = v;
      if (t.e) static_cast<__nv_bfloat16*>(t.e)[i] = __float2bfloat16_rn(w);  // as the cast kernel rounds
    }
  }
}

__device__ double block_sum(double v) {
  __shared__ double scratch[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double t = lane < warps ? scratch[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  __syncthreads();
  return t;
}

__global__ void sum_of_squares_kernel(const TensorSlot* slots, const Chunk* chunks, int64_t num, double* partials) {
  MF_FOR_CHUNK(c, num) {
    const TensorSlot t = slots[chunks[c].slot];
    const int64_t end = chunk_end(t, chunks[c].start);
    double s = 0;
    for (int64_t i = chunks[c].start + threadIdx.x; i < end; i += blockDim.x) {
      const double x = t.a[i];
      s += x * x;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) partials[c] = s;
  }
}

// One block adds the partials: thread j sums partials j, j + 256, ... in order, then the block's
// fixed reduction tree; the same order every run.
__global__ void sum_partials_kernel(const double* partials, int64_t num, double* out) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < num; i += blockDim.x) s += partials[i];
  s = block_sum(s);
  if (threadIdx.x == 0) out[0] = s;
}

__global__ void scale_kernel(const TensorSlot* slots, const Chunk* chunks, int64_t num, double factor) {
  MF_FOR_CHUNK(c, num) {
    const TensorSlot t = slots[chunks[c].slot];
    const int64_t end = chunk_end(t, chunks[c].start);
    for (int64_t i = chunks[c].start + threadIdx.x; i < end; i += blockDim.x)
      t.a[i] = __double2float_rn(static_cast<double>(t.a[i]) * factor);
  }
}

__global__ void ema_kernel(const TensorSlot* slots, const Chunk* chunks, int64_t num, float decay, float rest) {
  MF_FOR_CHUNK(c, num) {
    const TensorSlot t = slots[chunks[c].slot];
    const int64_t end = chunk_end(t, chunks[c].start);
    for (int64_t i = chunks[c].start + threadIdx.x; i < end; i += blockDim.x)
      t.a[i] = t.flag ? t.b[i] : __fadd_rn(__fmul_rn(t.a[i], decay), __fmul_rn(t.b[i], rest));
  }
}

}  // namespace

cudaError_t adamw_step(const TensorSlot* slots, const Chunk* chunks, int64_t num_chunks, AdamW s, cudaStream_t st) {
  if (num_chunks > 0) adamw_kernel<<<grid_for(num_chunks), kThreads, 0, st>>>(slots, chunks, num_chunks, s);
  return cudaGetLastError();
}

cudaError_t sum_of_squares(const TensorSlot* slots, const Chunk* chunks, int64_t num_chunks, double* partials,
                           double* out, cudaStream_t st) {
  if (num_chunks > 0) sum_of_squares_kernel<<<grid_for(num_chunks), kThreads, 0, st>>>(slots, chunks, num_chunks, partials);
  sum_partials_kernel<<<1, kThreads, 0, st>>>(partials, num_chunks, out);
  return cudaGetLastError();
}

cudaError_t scale(const TensorSlot* slots, const Chunk* chunks, int64_t num_chunks, double factor, cudaStream_t st) {
  if (num_chunks > 0) scale_kernel<<<grid_for(num_chunks), kThreads, 0, st>>>(slots, chunks, num_chunks, factor);
  return cudaGetLastError();
}

cudaError_t ema_update(const TensorSlot* slots, const Chunk* chunks, int64_t num_chunks, float decay,
                       float one_minus_decay, cudaStream_t st) {
  if (num_chunks > 0) ema_kernel<<<grid_for(num_chunks), kThreads, 0, st>>>(slots, chunks, num_chunks, decay, one_minus_decay);
  return cudaGetLastError();
}

}  // namespace mf::cuda::optim
