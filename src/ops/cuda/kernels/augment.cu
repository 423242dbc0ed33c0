// augment_crops on the GPU (data/device_crops.h): the training samples' RandomResizedCrop resize,
// flip and normalisation, from the rows the loader packed. The arithmetic is device_crops.h's
// integer functions, the ones the reference backend runs, so the images are the CPU transform's.
// And mix_images: Mixup/CutMix with data/batch_mix.h's arithmetic, rounded once.
#include "common.cuh"
#include "data/device_crops.h"

namespace mf::cuda::kernels {

namespace {

namespace cr = mf::crops;

constexpr int kAugBlock = 256;

// One block per (box row, sample): the horizontal pass of the rows the vertical pass reads, into
// tmp [B, max_rows, S, 3] bytes.
__global__ void augment_horizontal_kernel(const float* rows, const int32_t* headers, int64_t row_floats, int S,
                                          int max_rows, uint8_t* tmp) {
  const int b = blockIdx.y, r = blockIdx.x;
  const int32_t* h = headers + static_cast<int64_t>(b) * cr::kHeaderInts;
  if (h[cr::kMode] != cr::kPacked) return;
  const int y = h[cr::kRowBegin] + r;
  if (y >= h[cr::kRowEnd]) return;
  const auto* bytes = reinterpret_cast<const uint8_t*>(rows + static_cast<int64_t>(b) * row_floats);
  const auto* table = reinterpret_cast<const int32_t*>(bytes + h[cr::kHTable]);
  uint8_t* out = tmp + (static_cast<int64_t>(b) * max_rows + r) * S * 3;
  for (int i = threadIdx.x; i < S * 3; i += blockDim.x)
    out[i] = cr::horizontal(bytes, h[cr::kWidth], table, S, h[cr::kHTaps], y, i / 3, i % 3);
}

// One block per (output row, sample): the vertical pass, the flip and the normalisation table, or a
// finished row's copy.
template <typename T>
__global__ void augment_vertical_kernel(const float* rows, const int32_t* headers, int64_t row_floats, int S,
                                        int max_rows, const uint8_t* tmp, const float* table, T* y_out) {
  const int b = blockIdx.y, y = blockIdx.x;
  const int32_t* h = headers + static_cast<int64_t>(b) * cr::kHeaderInts;
  const float* row = rows + static_cast<int64_t>(b) * row_floats;
  T* out = y_out + (static_cast<int64_t>(b) * S + y) * S * 3;
  if (h[cr::kMode] != cr::kPacked) {
    for (int i = threadIdx.x; i < S * 3; i += blockDim.x) out[i] = from_f<T>(row[static_cast<int64_t>(y) * S * 3 + i]);
    return;
  }
  const auto* bytes = reinterpret_cast<const uint8_t*>(row);
  const auto* vt = reinterpret_cast<const int32_t*>(bytes + h[cr::kVTable]);
  const uint8_t* rows_b = tmp + static_cast<int64_t>(b) * max_rows * S * 3;
  const bool flip = h[cr::kFlip] != 0;
  for (int i = threadIdx.x; i < S * 3; i += blockDim.x) {
    const int x = i / 3, c = i % 3, sx = flip ? S - 1 - x : x;
    const uint8_t v = cr::vertical(rows_b, h[cr::kRowBegin], vt, S, h[cr::kVTaps], y, sx, c);
    out[i] = from_f<T>(table[c * 256 + v]);
  }
}

template <typename T>
cudaError_t augment_crops_t(const float* rows, const int32_t* headers, int64_t B, int S, int max_rows,
                            uint8_t* tmp, const float* table, T* y, cudaStream_t s) {
  if (B <= 0) return cudaSuccess;
  if (S <= 0 || B > 65535 || S > 65535) return cudaErrorInvalidValue;
  const int64_t row_floats = static_cast<int64_t>(S) * S * 3;
  if (max_rows > 0)
    augment_horizontal_kernel<<<dim3(static_cast<unsigned>(max_rows), static_cast<unsigned>(B)), kAugBlock, 0, s>>>(
        rows, headers, row_floats, S, max_rows, tmp);
  augment_vertical_kernel<typename Dev<T>::type><<<dim3(static_cast<unsigned>(S), static_cast<unsigned>(B)), kAugBlock, 0, s>>>(
      rows, headers, row_floats, S, max_rows, tmp, table, dev(y));
  return cudaGetLastError();
}

// One thread an element: sample b against sample B − 1 − b, as mix_images_into computes it
// (__fmaf_rn and __fmul_rn: no contraction may change the rounding).
template <typename T>
__global__ void mix_images_kernel(const float* x, T* y, int64_t B, int64_t per, int64_t W, int64_t C, int mode,
                                  float keep, float take, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
  const int64_t n = B * per;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / per, r = i - b * per;
    const float* partner = x + (B - 1 - b) * per;
    float v = x[i];
    if (mode == 1) {
      v = __fmaf_rn(v, keep, __fmul_rn(partner[r], take));
    } else if (mode == 2) {
      const int64_t pixel = r / C, row = pixel / W, col = pixel - row * W;
      if (row >= y0 && row < y1 && col >= x0 && col < x1) v = partner[r];
    }
    y[i] = from_f<T>(v);
  }
}

template <typename T>
cudaError_t mix_images_t(const float* x, T* y, int64_t B, int64_t H, int64_t W, int64_t C, int mode, float keep,
                         float take, const int64_t box[4], cudaStream_t s) {
  const int64_t per = H * W * C;
  if (B <= 0 || per <= 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((B * per + kAugBlock - 1) / kAugBlock, int64_t{1} << 16);
  mix_images_kernel<typename Dev<T>::type><<<static_cast<unsigned>(blocks), kAugBlock, 0, s>>>(
      x, dev(y), B, per, W, C, mode, keep, take, box[0], box[1], box[2], box[3]);
  return cudaGetLastError();
}

}  // namespace

cudaError_t mix_images(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, int mode, float keep,
                       float take, const int64_t box[4], cudaStream_t s) {
  return mix_images_t(x, y, B, H, W, C, mode, keep, take, box, s);
}
cudaError_t mix_images(const float* x, bf16* y, int64_t B, int64_t H, int64_t W, int64_t C, int mode, float keep,
                       float take, const int64_t box[4], cudaStream_t s) {
  return mix_images_t(x, y, B, H, W, C, mode, keep, take, box, s);
}

cudaError_t augment_crops(const float* rows, const int32_t* headers, int64_t B, int S, int max_rows, uint8_t* tmp,
                          const float* table, float* y, cudaStream_t s) {
  return augment_crops_t(rows, headers, B, S, max_rows, tmp, table, y, s);
}
cudaError_t augment_crops(const float* rows, const int32_t* headers, int64_t B, int S, int max_rows, uint8_t* tmp,
                          const float* table, bf16* y, cudaStream_t s) {
  return augment_crops_t(rows, headers, B, S, max_rows, tmp, table, y, s);
}

}  // namespace mf::cuda::kernels
