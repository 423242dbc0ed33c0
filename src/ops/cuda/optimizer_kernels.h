// The optimizer's kernels of the CUDA backend (cuda_optimizer.cpp; Backend::adamw_step and friends):
// multi-tensor, so that a model's few hundred parameter tensors take one launch per op instead of
// one each. The tensors are cut into chunks of kOptimizerChunk elements; a chunk table (tensor,
// first element) says which block works on what. Every elementwise update is written with explicit
// round-to-nearest intrinsics (no fused multiply-add), the float32 sequence of Backend::adamw_step,
// so a run is reproducible bit for bit; reductions are in double, in a fixed order, without atomics.
//
// Raw device pointers, C++17 for nvcc 11.8 (see backward_kernels.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace mf::cuda::optim {

constexpr int64_t kOptimizerChunk = 4096;

// One tensor of a list: up to four arrays of n floats (unused ones null) and a per-tensor flag.
struct TensorSlot {
  float* a;        // AdamW: weight; EMA: average; sum of squares / scale: the tensor
  const float* b;  // AdamW: gradient; EMA: weight
  float* c;        // AdamW: exp_avg
  float* d;        // AdamW: exp_avg_sq
  void* e;         // AdamW: the weight's bf16 copy, rewritten with the new weight (or null)
  int64_t n;
  int flag;        // AdamW: weight decay applies; EMA: copy instead of averaging
};
struct Chunk {
  int32_t slot;
  int64_t start;
};

struct AdamW {
  float decay_factor, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, step_size;
};

// slots and chunks are device arrays (num_chunks of them cover every element of every slot).
cudaError_t adamw_step(const TensorSlot* slots, const Chunk* chunks, int64_t num_chunks, AdamW s, cudaStream_t st);
// out[0] = Σ over every chunk of Σ a²; partials: num_chunks doubles of workspace.
cudaError_t sum_of_squares(const TensorSlot* slots, const Chunk* chunks, int64_t num_chunks, double* partials,
                           double* out, cudaStream_t st);
// a = float(double(a) · factor)
cudaError_t scale(const TensorSlot* slots, const Chunk* chunks, int64_t num_chunks, double factor, cudaStream_t st);
// a = a · decay + b · one_minus_decay, or a = b where flag
cudaError_t ema_update(const TensorSlot* slots, const Chunk* chunks, int64_t num_chunks, float decay,
                       float one_minus_decay, cudaStream_t st);

}  // namespace mf::cuda::optim
