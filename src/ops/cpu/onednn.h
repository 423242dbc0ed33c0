// Shared oneDNN state for the CPU backend: one engine and stream, plus a cache of primitives keyed
// by shape, because building a oneDNN primitive costs far more than running a small one.
#pragma once

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <cstring>
#include <functional>
#include <string>
#include <unordered_map>

#include "core/tensor.h"

namespace mf::onednn {

dnnl::engine& engine();
dnnl::stream& stream();

// A plain row-major memory descriptor with explicit strides (f32 unless told).
dnnl::memory::desc plain(const dnnl::memory::dims& dims, const dnnl::memory::dims& strides,
                         dnnl::memory::data_type type = dnnl::memory::data_type::f32);

// The operand type of the GEMM-class ops at a backend precision.
dnnl::memory::data_type operand_type(bool bf16);

// Rounds n floats to bfloat16 (to nearest even) into scratch buffer `slot` and returns it. Each slot
// grows to its largest use and is kept, so the steady state allocates nothing; a slot's contents
// live until its next use, so one op's operands take different slots.
enum class Scratch { linear_src, conv_src, attn_qkv, attn_q, attn_scores, attn_probs, mlp_hidden, mlp_normed, dw_block, glu_block, kCount };
void* bf16_scratch(Scratch slot, const float* x, int64_t n);
// The slot's buffer, at least `bytes` long (uninitialised).
void* scratch(Scratch slot, int64_t bytes);
// The same conversion into caller memory (uint16_t bit patterns).
void round_to_bf16(const float* x, int64_t n, uint16_t* out);
// The same on the calling thread (for use inside a parallel loop). Round to nearest even on the bit
// pattern; activations are finite, so a NaN's special case is not needed. The loop vectorises.
inline void round_to_bf16_serial(const float* __restrict x, int64_t n, uint16_t* __restrict out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &x[i], 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    out[i] = static_cast<uint16_t>(u >> 16);
  }
}
dnnl::memory::desc tagged(const dnnl::memory::dims& dims, dnnl::memory::format_tag tag);

// Wraps caller memory (no copy). oneDNN's API takes a non-const pointer even for inputs.
dnnl::memory wrap(const dnnl::memory::desc& md, const float* data);

// Returns the cached value for `key`, building it with `make` on first use.
template <typename T>
T& cached(const std::string& key, const std::function<T()>& make) {
  static std::unordered_map<std::string, T> cache;
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, make()).first;
  return it->second;
}

// Copies `src` into the layout `want` (a oneDNN-chosen blocked layout), or returns it unchanged
// when the layouts already agree.
dnnl::memory reorder_if_needed(const dnnl::memory& src, const dnnl::memory::desc& want);

// Parameter `w` (given as `plain`, a wrapped view of its data) in the layout and data type `want`,
// reordered on first use and cached on the tensor: one copy per distinct layout, shared by every
// primitive that asks for it (the layout oneDNN picks may depend on the batch or row count, but
// usually does not, and a copy per shape would multiply the weights' memory). Dropped when the
// parameter changes.
const dnnl::memory& prepared_weights(const Tensor& w, const dnnl::memory& plain, const dnnl::memory::desc& want);

// A plain (strided) matmul primitive C[M, N] (+)= A[M, K] · B[K, N], cached by shape, strides and
// accumulation; strides express transposes without copies. run_strided executes it and waits.
dnnl::matmul& strided_matmul(int64_t M, int64_t K, int64_t N, dnnl::memory::dims a_strides,
                             dnnl::memory::dims b_strides, bool accumulate);
void run_strided(dnnl::matmul& mm, int64_t M, int64_t K, int64_t N, dnnl::memory::dims as, dnnl::memory::dims bs,
                 const float* a, const float* b, float* c);

}  // namespace mf::onednn
