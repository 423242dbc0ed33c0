// Elementwise kernels: binary ops, activations, per-channel affine maps, residuals, gated products,
// channel windows and storage casts. Grid-stride loops, fp32 arithmetic on float or bf16 storage.
#include "common.cuh"

#include <type_traits>

namespace mf::cuda::kernels {
namespace {

constexpr int kBlock = 256;

template <typename T, int OP>  // OP 0: add, 1: mul
__global__ void binary_kernel(const T* a, const T* b, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float u = to_f(a[i]), v = to_f(b[i]);
    y[i] = from_f<T>(OP == 0 ? u + v : u * v);
  }
}

template <typename T>
__global__ void activation_kernel(const T* x, T* y, int64_t n, Act act) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f<T>(act_apply(act, to_f(x[i])));
}

// Per-channel kernels run flat over rows × C with c = i % C; the index type I is 32-bit when the
// tensor allows it (64-bit division is many times slower on the GPU).
template <typename T, typename I>
__global__ void channel_affine_act_kernel(const T* x, const float* scale, const float* bias, T* y, I n, I C, Act act) {
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < n; i += I(gridDim.x) * blockDim.x) {
    const I c = i % C;
    float v = to_f(x[i]);
    if (scale) v *= scale[c];
    if (bias) v += bias[c];
    y[i] = from_f<T>(act_apply(act, v));
  }
}

template <typename T, typename I>
__global__ void scaled_residual_kernel(const T* x, const float* rs, const T* br, const float* ls, T* y, I n, I C) {
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < n; i += I(gridDim.x) * blockDim.x) {
    const I c = i % C;
    const float a = to_f(x[i]) * (rs ? rs[c] : 1.f);
    y[i] = from_f<T>(fmaf(to_f(br[i]), ls ? ls[c] : 1.f, a));
  }
}

inline bool fits32(int64_t n) { return n < (int64_t(1) << 31) - 65536LL * 8 * 256; }


// KIND: the activation's kind fixed at compile time where launches name it (with_static_act), -1 read
// at run time; either way StarReLU's scalars are read once a thread (act_resolved), not per element.
// Nsight Compute found this kernel's issue slots 73 % busy with ConvFormer's StarReLU (H100,
// 2026-12-05): for a copy-rate kernel, instructions were the limit.
template <typename T, int KIND>
__global__ void activation_vec_kernel(const T* x, T* y, int64_t nvec, Act act) {
  const Act a = act_resolved(act);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nvec; i += int64_t(gridDim.x) * blockDim.x) {
    float v[kVec<T>];
    load_vec(x + i * kVec<T>, v);
#pragma unroll
    for (int j = 0; j < kVec<T>; ++j) v[j] = act_static<KIND>(a, v[j]);
    store_vec(y + i * kVec<T>, v);
  }
}

// Calls f(kind) with the activation's kind as a compile-time constant for the kinds the zoo's hot
// paths use (StarReLU, GELU), -1 otherwise.
template <typename F>
cudaError_t with_static_act(ActKind kind, F f) {
  switch (kind) {
    case ActKind::StarReLU: return f(std::integral_constant<int, static_cast<int>(ActKind::StarReLU)>{});
    case ActKind::GELU: return f(std::integral_constant<int, static_cast<int>(ActKind::GELU)>{});
    default: return f(std::integral_constant<int, -1>{});
  }
}

// C a multiple of the vector width: a vector's elements are channels c0 .. c0 + kVec - 1.
template <typename T>
__global__ void scaled_residual_vec_kernel(const T* x, const float* rs, const T* br, const float* ls, T* y,
                                           uint32_t nvec, uint32_t C) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += gridDim.x * blockDim.x) {
    const uint32_t c0 = (i * kVec<T>) % C;
    float a[kVec<T>], b[kVec<T>], lv[kVec<T>], rv[kVec<T>];
    load_vec(x + size_t(i) * kVec<T>, a);
    load_vec(br + size_t(i) * kVec<T>, b);
    load_params(ls, c0, 1.f, lv);
    load_params(rs, c0, 1.f, rv);
#pragma unroll
    for (int j = 0; j < kVec<T>; ++j) a[j] = fmaf(b[j], lv[j], a[j] * rv[j]);
    store_vec(y + size_t(i) * kVec<T>, a);
  }
}

template <typename T>
__global__ void sample_scale_kernel(const T* x, const float* s, T* y, int64_t B, int64_t per) {
  const int64_t n = B * per;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f<T>(to_f(x[i]) * s[i / per]);
}

template <typename T>
__global__ void channel_slice_kernel(const T* x, T* y, int64_t rows, int64_t C, int64_t offset, int64_t width) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) y[r * width + j] = x[r * C + offset + j];
}

// 16 bytes a thread, flat over rows × width / V with 32-bit indices (the launcher checks the sizes,
// the widths, the offset and the pointers): the row kernel above moves 2 bytes a thread in blocks as
// wide as a row, and its bf16 copy was 4-5 % of MambaOut-Femto's training kernel time (H100 and H200,
// 2026-12-05).
template <typename T>
__global__ void channel_slice_vec_kernel(const T* x, T* y, uint32_t C, uint32_t offset, uint32_t width,
                                         uint32_t total) {
  constexpr uint32_t V = kVec<T>;
  const uint32_t wv = width / V;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const uint32_t r = i / wv, j = (i - r * wv) * V;
    *reinterpret_cast<uint4*>(y + size_t(r) * width + j) =
        *reinterpret_cast<const uint4*>(x + size_t(r) * C + offset + j);
  }
}

template <typename T>
__global__ void glu_kernel(const T* t, int64_t Ct, const T* c, int64_t cw, int64_t gate_offset, int64_t value_offset,
                           T* y, int64_t rows, int64_t width, Act act) {
  const int64_t from_t = width - cw;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const float g = act_apply(act, to_f(t[r * Ct + gate_offset + j]));
      const float v = j < from_t ? to_f(t[r * Ct + value_offset + j]) : to_f(c[r * cw + j - from_t]);
      y[r * width + j] = from_f<T>(g * v);
    }
}

// The gated product 16 bytes a thread: every width and offset a multiple of the vector, so that no
// vector straddles the t / c boundary. Flat over rows × width / V (32-bit: the launcher checks).
template <typename T, int KIND>  // KIND: as activation_vec_kernel's
__global__ void glu_vec_kernel(const T* t, uint32_t Ct, const T* c, uint32_t cw, uint32_t gate_offset,
                               uint32_t value_offset, T* y, uint32_t width, uint32_t total, Act act_in) {
  constexpr int V = kVec<T>;
  const Act act = act_resolved(act_in);
  const uint32_t wv = width / V, from_t = width - cw;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const uint32_t r = i / wv, j = (i - r * wv) * V;
    float g[V], v[V];
    load_vec(t + size_t(r) * Ct + gate_offset + j, g);
    // One load from a chosen address: two loads in the two branches came out of nvcc as one 16-byte
    // load and four 4-byte ones (tools/ptx_loads.py).
    load_vec(j < from_t ? t + size_t(r) * Ct + value_offset + j : c + size_t(r) * cw + (j - from_t), v);
#pragma unroll
    for (int e = 0; e < V; ++e) g[e] = act_static<KIND>(act, g[e]) * v[e];
    store_vec(y + size_t(r) * width + j, g);
  }
}

template <typename A, typename B>
__global__ void cast_kernel(const A* x, B* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f<B>(to_f(x[i]));
}

// Rows handled per launch: one block per row up to the grid cap, then grid-stride.
inline unsigned row_grid(int64_t rows) { return grid_for(rows, 1); }

template <typename T>
cudaError_t binary(int op, const T* a, const T* b, T* y, int64_t n, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  if (op == 0)
    binary_kernel<typename Dev<T>::type, 0><<<grid_for(n, kBlock), kBlock, 0, s>>>(dev(a), dev(b), dev(y), n);
  else
    binary_kernel<typename Dev<T>::type, 1><<<grid_for(n, kBlock), kBlock, 0, s>>>(dev(a), dev(b), dev(y), n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t activation_t(const T* x, T* y, int64_t n, Act act, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  using D = typename Dev<T>::type;
  if (n % kVec<D> == 0 && aligned16(x) && aligned16(y)) {
    return with_static_act(act.kind, [&](auto kind) {
      activation_vec_kernel<D, decltype(kind)::value>
          <<<grid_for(n / kVec<D>, kBlock), kBlock, 0, s>>>(dev(x), dev(y), n / kVec<D>, act);
      return cudaGetLastError();
    });
  }
  activation_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(dev(x), dev(y), n, act);
  return cudaGetLastError();
}

// Threads per block for per-row kernels: enough to cover C once where possible.
inline int row_block(int64_t C) { return C >= 256 ? 256 : C > 64 ? 128 : 64; }

template <typename T>
cudaError_t channel_affine_act_t(const T* x, const float* scale, const float* bias, T* y, int64_t rows, int64_t C,
                                 Act act, cudaStream_t s) {
  if (rows <= 0 || C <= 0) return cudaSuccess;
  const int64_t n = rows * C;
  if (fits32(n))
    channel_affine_act_kernel<typename Dev<T>::type, uint32_t><<<grid_for(n, kBlock), kBlock, 0, s>>>(
        dev(x), scale, bias, dev(y), uint32_t(n), uint32_t(C), act);
  else
    channel_affine_act_kernel<typename Dev<T>::type, int64_t><<<grid_for(n, kBlock), kBlock, 0, s>>>(
        dev(x), scale, bias, dev(y), n, C, act);
  return cudaGetLastError();
}

template <typename T>
cudaError_t scaled_residual_t(const T* x, const float* rs, const T* br, const float* ls, T* y, int64_t rows, int64_t C,
                              cudaStream_t s) {
  if (rows <= 0 || C <= 0) return cudaSuccess;
  const int64_t n = rows * C;
  using D = typename Dev<T>::type;
  if (C % kVec<D> == 0 && fits32(n) && aligned16(x) && aligned16(br) && aligned16(y) && params_aligned16({rs, ls})) {
    const int64_t nvec = n / kVec<D>;
    scaled_residual_vec_kernel<<<grid_for(nvec, kBlock), kBlock, 0, s>>>(dev(x), rs, dev(br), ls, dev(y),
                                                                         uint32_t(nvec), uint32_t(C));
    return cudaGetLastError();
  }
  if (fits32(n))
    scaled_residual_kernel<typename Dev<T>::type, uint32_t><<<grid_for(n, kBlock), kBlock, 0, s>>>(
        dev(x), rs, dev(br), ls, dev(y), uint32_t(n), uint32_t(C));
  else
    scaled_residual_kernel<typename Dev<T>::type, int64_t><<<grid_for(n, kBlock), kBlock, 0, s>>>(
        dev(x), rs, dev(br), ls, dev(y), n, C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t sample_scale_t(const T* x, const float* sc, T* y, int64_t B, int64_t per, cudaStream_t s) {
  if (B <= 0 || per <= 0) return cudaSuccess;
  sample_scale_kernel<<<grid_for(B * per, kBlock), kBlock, 0, s>>>(dev(x), sc, dev(y), B, per);
  return cudaGetLastError();
}

template <typename T>
cudaError_t channel_slice_t(const T* x, T* y, int64_t rows, int64_t C, int64_t offset, int64_t width, cudaStream_t s) {
  if (offset < 0 || width < 0 || offset + width > C) return cudaErrorInvalidValue;
  if (rows <= 0 || width == 0) return cudaSuccess;
  using D = typename Dev<T>::type;
  constexpr int V = kVec<D>;
  const int64_t total = rows * width / V;
  if (C % V == 0 && offset % V == 0 && width % V == 0 && aligned16(x) && aligned16(y) && fits32(rows * C)) {
    channel_slice_vec_kernel<<<grid_for(total, kBlock), kBlock, 0, s>>>(dev(x), dev(y), uint32_t(C), uint32_t(offset),
                                                                       uint32_t(width), uint32_t(total));
    return cudaGetLastError();
  }
  channel_slice_kernel<<<row_grid(rows), row_block(width), 0, s>>>(dev(x), dev(y), rows, C, offset, width);
  return cudaGetLastError();
}

template <typename T>
cudaError_t glu_t(const T* t, int64_t Ct, const T* c, int64_t cw, int64_t gate_offset, int64_t value_offset, T* y,
                  int64_t rows, int64_t width, Act act, cudaStream_t s) {
  if (cw < 0 || cw > width || (cw > 0 && !c) || gate_offset < 0 || gate_offset + width > Ct || value_offset < 0 ||
      value_offset + (width - cw) > Ct)
    return cudaErrorInvalidValue;
  if (rows <= 0 || width == 0) return cudaSuccess;
  using D = typename Dev<T>::type;
  constexpr int V = kVec<D>;
  const int64_t total = rows * width / V;
  if (Ct % V == 0 && cw % V == 0 && gate_offset % V == 0 && value_offset % V == 0 && width % V == 0 &&
      aligned16(t) && (!c || aligned16(c)) && aligned16(y) && total < (int64_t(1) << 31)) {
    return with_static_act(act.kind, [&](auto kind) {
      glu_vec_kernel<D, decltype(kind)::value><<<grid_for(total, kBlock), kBlock, 0, s>>>(
          dev(t), uint32_t(Ct), dev(c), uint32_t(cw), uint32_t(gate_offset), uint32_t(value_offset), dev(y),
          uint32_t(width), uint32_t(total), act);
      return cudaGetLastError();
    });
  }
  glu_kernel<<<row_grid(rows), row_block(width), 0, s>>>(dev(t), Ct, dev(c), cw, gate_offset, value_offset, dev(y),
                                                         rows, width, act);
  return cudaGetLastError();
}

template <typename A, typename B>
cudaError_t cast_t(const A* x, B* y, int64_t n, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  cast_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(dev(x), dev(y), n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t add(const float* a, const float* b, float* y, int64_t n, cudaStream_t s) { return binary(0, a, b, y, n, s); }
cudaError_t add(const bf16* a, const bf16* b, bf16* y, int64_t n, cudaStream_t s) { return binary(0, a, b, y, n, s); }
cudaError_t mul(const float* a, const float* b, float* y, int64_t n, cudaStream_t s) { return binary(1, a, b, y, n, s); }
cudaError_t mul(const bf16* a, const bf16* b, bf16* y, int64_t n, cudaStream_t s) { return binary(1, a, b, y, n, s); }

cudaError_t activation(const float* x, float* y, int64_t n, Act act, cudaStream_t s) {
  return activation_t(x, y, n, act, s);
}
cudaError_t activation(const bf16* x, bf16* y, int64_t n, Act act, cudaStream_t s) {
  return activation_t(x, y, n, act, s);
}

cudaError_t channel_affine_act(const float* x, const float* scale, const float* bias, float* y, int64_t rows,
                               int64_t C, Act act, cudaStream_t s) {
  return channel_affine_act_t(x, scale, bias, y, rows, C, act, s);
}
cudaError_t channel_affine_act(const bf16* x, const float* scale, const float* bias, bf16* y, int64_t rows, int64_t C,
                               Act act, cudaStream_t s) {
  return channel_affine_act_t(x, scale, bias, y, rows, C, act, s);
}

cudaError_t scaled_residual(const float* x, const float* res_scale, const float* branch, const float* layer_scale,
                            float* y, int64_t rows, int64_t C, cudaStream_t s) {
  return scaled_residual_t(x, res_scale, branch, layer_scale, y, rows, C, s);
}
cudaError_t scaled_residual(const bf16* x, const float* res_scale, const bf16* branch, const float* layer_scale,
                            bf16* y, int64_t rows, int64_t C, cudaStream_t s) {
  return scaled_residual_t(x, res_scale, branch, layer_scale, y, rows, C, s);
}

cudaError_t sample_scale(const float* x, const float* scale, float* y, int64_t B, int64_t per, cudaStream_t s) {
  return sample_scale_t(x, scale, y, B, per, s);
}
cudaError_t sample_scale(const bf16* x, const float* scale, bf16* y, int64_t B, int64_t per, cudaStream_t s) {
  return sample_scale_t(x, scale, y, B, per, s);
}

cudaError_t channel_slice(const float* x, float* y, int64_t rows, int64_t C, int64_t offset, int64_t width,
                          cudaStream_t s) {
  return channel_slice_t(x, y, rows, C, offset, width, s);
}
cudaError_t channel_slice(const bf16* x, bf16* y, int64_t rows, int64_t C, int64_t offset, int64_t width,
                          cudaStream_t s) {
  return channel_slice_t(x, y, rows, C, offset, width, s);
}

cudaError_t glu(const float* t, int64_t Ct, const float* c, int64_t cw, int64_t gate_offset, int64_t value_offset,
                float* y, int64_t rows, int64_t width, Act act, cudaStream_t s) {
  return glu_t(t, Ct, c, cw, gate_offset, value_offset, y, rows, width, act, s);
}
cudaError_t glu(const bf16* t, int64_t Ct, const bf16* c, int64_t cw, int64_t gate_offset, int64_t value_offset,
                bf16* y, int64_t rows, int64_t width, Act act, cudaStream_t s) {
  return glu_t(t, Ct, c, cw, gate_offset, value_offset, y, rows, width, act, s);
}

cudaError_t cast(const float* x, bf16* y, int64_t n, cudaStream_t s) { return cast_t(x, y, n, s); }
cudaError_t cast(const bf16* x, float* y, int64_t n, cudaStream_t s) { return cast_t(x, y, n, s); }

}  // namespace mf::cuda::kernels
