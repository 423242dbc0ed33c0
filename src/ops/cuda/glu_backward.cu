// The gated product's backward (ops glu: MambaOut's gated CNN, the GLU MLPs, Hydra): dt, the
// gradient of the projection t that holds the gate and value windows, and dc, that of the mixed
// channels c that replace the value's tail. Split from backward_kernels.cu, which holds the other
// elementwise backward kernels; the same helpers (backward_common.cuh, activation_grad.cuh).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/env_switch.h"
#include "ops/cuda/activation_grad.cuh"
#include "ops/cuda/backward_common.cuh"
#include "ops/cuda/backward_kernels.h"

namespace mf::cuda::backward {
using namespace detail;
namespace {

// One thread per element of t: its gradient as the gate of output j = k − gate_offset and as the
// value of output j = k − value_offset (the windows may overlap; no two threads write one element).
// Float arithmetic (GELU's and SiLU's erff and expf) and 32-bit indices (the launcher checks the
// sizes): the double version was a fifth of MambaOut-Femto's training kernel time.
template <class T>
__global__ void glu_dt_kernel(const T* t, int Ct, const T* c, int cw, int gate_offset, int value_offset, Act act,
                              const T* dy, int width, T* dt, int total) {
  const int from_t = width - cw;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int r = i / Ct, k = i - r * Ct;
    const T* tr = t + static_cast<int64_t>(r) * Ct;
    const T* dyr = dy + static_cast<int64_t>(r) * width;
    float acc = 0.f;
    const int jg = k - gate_offset;
    if (jg >= 0 && jg < width) {
      const float v = ld(jg < from_t ? tr[value_offset + jg] : c[static_cast<int64_t>(r) * cw + jg - from_t]);
      acc += ld(dyr[jg]) * v * act_derivative_f(act, ld(tr[k]));
    }
    const int jv = k - value_offset;
    if (jv >= 0 && jv < from_t) acc += ld(dyr[jv]) * act_value_f(act, ld(tr[gate_offset + jv]));
    dt[i] = narrow<T>(acc);
  }
}

template <class T>
__global__ void glu_dc_kernel(const T* t, int Ct, int cw, int gate_offset, Act act, const T* dy, int width, T* dc,
                              int total) {
  const int from_t = width - cw;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int r = i / cw, j = from_t + (i - r * cw);
    const float g = act_value_f(act, ld(t[static_cast<int64_t>(r) * Ct + gate_offset + j]));
    dc[i] = narrow<T>(ld(dy[static_cast<int64_t>(r) * width + j]) * g);
  }
}

// The same sums, 16 bytes of dt (or dc) a thread, where every width and offset is a multiple of the
// vector (MambaOut's and gMLP's are): a vector then lies in one region of t (gate, value or
// neither), and the loads are 16-byte. The scalar kernels (one 2-byte load at a time, a division
// per element) made glu_dt 15 % of a bf16 mambaout_femto training step's kernel time (H100,
// 2026-12-05), about 2.6× the time its bytes take at the copy rate.
template <class T>
__global__ void glu_dt_vec_kernel(const T* t, uint32_t Ct, const T* c, uint32_t cw, uint32_t gate_offset,
                                  uint32_t value_offset, Act act, const T* dy, uint32_t width, T* dt, uint32_t vectors) {
  constexpr int V = kVec<T>;
  const uint32_t ctv = Ct / V, from_t = width - cw;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < vectors; i += gridDim.x * blockDim.x) {
    const uint32_t r = i / ctv, k = (i - r * ctv) * V;
    const T* tr = t + static_cast<size_t>(r) * Ct;
    const T* dyr = dy + static_cast<size_t>(r) * width;
    float acc[V];
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = 0.f;
    if (k >= gate_offset && k - gate_offset < width) {
      const uint32_t jg = k - gate_offset;
      float g[V], v[V], d[V];
      load16(tr + k, g);
      load16(jg < from_t ? tr + value_offset + jg : c + static_cast<size_t>(r) * cw + (jg - from_t), v);  // one load
      load16(dyr + jg, d);
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] += d[e] * v[e] * act_derivative_f(act, g[e]);
    }
    if (k >= value_offset && k - value_offset < from_t) {
      const uint32_t jv = k - value_offset;
      float g[V], d[V];
      load16(tr + gate_offset + jv, g);
      load16(dyr + jv, d);
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] += d[e] * act_value_f(act, g[e]);
    }
    store16(dt + static_cast<size_t>(r) * Ct + k, acc);
  }
}

template <class T>
__global__ void glu_dc_vec_kernel(const T* t, uint32_t Ct, uint32_t cw, uint32_t gate_offset, Act act, const T* dy,
                                  uint32_t width, T* dc, uint32_t vectors) {
  constexpr int V = kVec<T>;
  const uint32_t cwv = cw / V, from_t = width - cw;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < vectors; i += gridDim.x * blockDim.x) {
    const uint32_t r = i / cwv, j = from_t + (i - r * cwv) * V;
    float g[V], d[V];
    load16(t + static_cast<size_t>(r) * Ct + gate_offset + j, g);
    load16(dy + static_cast<size_t>(r) * width + j, d);
#pragma unroll
    for (int e = 0; e < V; ++e) d[e] = d[e] * act_value_f(act, g[e]);
    store16(dc + static_cast<size_t>(r) * cw + (j - from_t), d);
  }
}

// The gate, value and dy of one 16-byte piece of the product read once: writes dt's gate window
// (dy·v·act'(g)) and its value window (dy·act(g)) where the value comes from t, else dc (dy·act(g)) and
// zeros in dt's value window, which the caller's channel slice then adds into. For the layouts where
// the two windows tile t's columns (Ct = 2·width, offsets 0 and width in either order: MambaOut's gated
// CNN, the GLU MLPs, Hydra). glu_dt_vec_kernel (a thread per 16 bytes of dt) reads the gate and dy
// twice for it, and glu_dc_vec_kernel a third time where c is given: 7·width + cw elements a row
// against 5·width + cw here. The same float operations, so the same bits (METAFORMER_CUDA_GLU_BWD=split
// runs the pair). The glu_dt and glu_dc kernels were 12 % of a bf16 mambaout_femto training step's
// kernel time (H100, 2026-12-06), at about 64 % of the copy rate.
template <class T>
__global__ void glu_rows_vec_kernel(const T* t, const T* c, uint32_t cw, uint32_t gate_offset, uint32_t value_offset,
                                    Act act, const T* dy, uint32_t width, T* dt, T* dc, uint32_t vectors) {
  constexpr int V = kVec<T>;
  const uint32_t wv = width / V, from_t = width - cw, Ct = 2 * width;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < vectors; i += gridDim.x * blockDim.x) {
    const uint32_t r = i / wv, j = (i - r * wv) * V;
    T* dtr = dt + static_cast<size_t>(r) * Ct;
    const T* tr = t + static_cast<size_t>(r) * Ct;
    float g[V], v[V], d[V], dg[V], dv[V];
    load16(tr + gate_offset + j, g);
    load16(j < from_t ? tr + value_offset + j : c + static_cast<size_t>(r) * cw + (j - from_t), v);  // one load
    load16(dy + static_cast<size_t>(r) * width + j, d);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      dg[e] = d[e] * v[e] * act_derivative_f(act, g[e]);
      dv[e] = d[e] * act_value_f(act, g[e]);
    }
    store16(dtr + gate_offset + j, dg);
    if (j < from_t) {
      store16(dtr + value_offset + j, dv);
    } else {
      if (dc) store16(dc + static_cast<size_t>(r) * cw + (j - from_t), dv);
      float z[V];
#pragma unroll
      for (int e = 0; e < V; ++e) z[e] = 0.f;
      store16(dtr + value_offset + j, z);
    }
  }
}

// Whether glu_backward's 16-byte path runs glu_rows_vec_kernel where the layout allows (the
// default), or glu_dt_vec_kernel and glu_dc_vec_kernel (METAFORMER_CUDA_GLU_BWD=split).
bool glu_backward_by_rows() {
  static const bool rows = env_choice("METAFORMER_CUDA_GLU_BWD", {"rows", "split"}) != 1;
  return rows;
}

}  // namespace

template <class H_>
cudaError_t glu_backward(const H_* t, int64_t Ct, const H_* c, int64_t cw, int64_t gate_offset, int64_t value_offset,
                         Act act, const H_* dy, int64_t width, H_* dt, H_* dc, int64_t rows, cudaStream_t s) {
  using T = typename DevT<H_>::type;
  constexpr int64_t kMax = int64_t{1} << 31;
  if (rows * Ct >= kMax || rows * width >= kMax || rows * cw >= kMax) return cudaErrorInvalidValue;
  const int ct = static_cast<int>(Ct), w = static_cast<int>(width), c_w = static_cast<int>(cw);
  constexpr int64_t V = kVec<T>;
  using kernels::aligned16;
  if (Ct % V == 0 && cw % V == 0 && gate_offset % V == 0 && value_offset % V == 0 && width % V == 0 &&
      aligned16(t) && (!c || aligned16(c)) && aligned16(dy) && aligned16(dt) && (!dc || aligned16(dc))) {
    const bool tiled = Ct == 2 * width && ((gate_offset == 0 && value_offset == width) ||
                                           (gate_offset == width && value_offset == 0));
    if (tiled && glu_backward_by_rows()) {
      if (rows * width > 0)
        glu_rows_vec_kernel<T><<<blocks_for(rows * width / V), kThreads, 0, s>>>(
            dptr(t), dptr(c), static_cast<uint32_t>(cw), static_cast<uint32_t>(gate_offset),
            static_cast<uint32_t>(value_offset), act, dptr(dy), static_cast<uint32_t>(width), dptr(dt), dptr(dc),
            static_cast<uint32_t>(rows * width / V));
      return cudaGetLastError();
    }
    if (rows * Ct > 0)
      glu_dt_vec_kernel<T><<<blocks_for(rows * Ct / V), kThreads, 0, s>>>(
          dptr(t), static_cast<uint32_t>(Ct), dptr(c), static_cast<uint32_t>(cw), static_cast<uint32_t>(gate_offset),
          static_cast<uint32_t>(value_offset), act, dptr(dy), static_cast<uint32_t>(width), dptr(dt),
          static_cast<uint32_t>(rows * Ct / V));
    if (dc && rows * cw > 0)
      glu_dc_vec_kernel<T><<<blocks_for(rows * cw / V), kThreads, 0, s>>>(
          dptr(t), static_cast<uint32_t>(Ct), static_cast<uint32_t>(cw), static_cast<uint32_t>(gate_offset), act,
          dptr(dy), static_cast<uint32_t>(width), dptr(dc), static_cast<uint32_t>(rows * cw / V));
    return cudaGetLastError();
  }
  if (rows * Ct > 0)
    glu_dt_kernel<T><<<blocks_for(rows * Ct), kThreads, 0, s>>>(dptr(t), ct, dptr(c), c_w, static_cast<int>(gate_offset),
                                                                static_cast<int>(value_offset), act, dptr(dy), w,
                                                                dptr(dt), static_cast<int>(rows * Ct));
  if (dc && rows * cw > 0)
    glu_dc_kernel<T><<<blocks_for(rows * cw), kThreads, 0, s>>>(dptr(t), ct, c_w, static_cast<int>(gate_offset), act,
                                                                dptr(dy), w, dptr(dc), static_cast<int>(rows * cw));
  return cudaGetLastError();
}
template cudaError_t glu_backward(const float*, int64_t, const float*, int64_t, int64_t, int64_t, Act, const float*,
                                  int64_t, float*, float*, int64_t, cudaStream_t);
template cudaError_t glu_backward(const bf16*, int64_t, const bf16*, int64_t, int64_t, int64_t, Act, const bf16*,
                                  int64_t, bf16*, bf16*, int64_t, cudaStream_t);

}  // namespace mf::cuda::backward
