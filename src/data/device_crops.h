// Augmentation by the backend ("GPU augmentation", docs/training.md): a training sample's
// RandomResizedCrop, flip and normalisation computed by the backend's augment_crops instead of by
// the loader's worker.
//
// The worker decodes the image and draws the box and the flip exactly as the CPU transform does
// (Dataset::get_crop), then packs the sample into its row of the batch, the [S, S, 3] fp32 slot
// that the finished image would fill: the box's pixels (bytes) and the fixed-point tables of the
// two resampling passes (io/resample.h's resample_taps, the ones the CPU transform uses). A header
// of kHeaderInts ints a sample says where each part is. A sample that does not fit its row (a box
// of more than about 190,000 pixels at S = 224) is finished by the worker instead, and its header
// says so. The backend then runs the same integer arithmetic as the CPU transform (the functions
// below, written once for the host and for nvcc), so the images are the CPU transform's values bit
// for bit, and the batch crosses PCIe as bytes rather than floats.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MF_CROPS_HD __host__ __device__
#else
#define MF_CROPS_HD
#endif

namespace mf::crops {

// A sample's header, kHeaderInts int32 values (their bits in a [B, kHeaderInts] fp32 tensor).
enum : int {
  kMode,      // kFinished: the row is the finished image; kPacked: the row holds what follows
  kWidth,     // the box's size, in pixels
  kHeight,
  kFlip,      // 1: mirror horizontally
  kHTaps,     // the horizontal table's weights per output column
  kVTaps,     // the vertical table's weights per output row
  kHTable,    // byte offsets in the row of the two tables (first[S], count[S], k[S * taps], int32)
  kVTable,
  kRowBegin,  // the box rows that the vertical pass reads: [begin, end)
  kRowEnd,
  kHeaderInts = 16
};
enum : int32_t { kFinished = 0, kPacked = 1 };

constexpr int kPrecisionBits = 22;  // resample_taps' fixed point

MF_CROPS_HD inline uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;  // arithmetic shift, as Pillow
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Output column x (of S) of box row y, channel c: the horizontal pass. `box` is the box's pixels,
// w wide, 3 bytes each; `table` is first[S], count[S], k[S * taps].
MF_CROPS_HD inline uint8_t horizontal(const uint8_t* box, int w, const int32_t* table, int S, int taps, int y, int x,
                                      int c) {
  const int first = table[x], n = table[S + x];
  const int32_t* k = table + 2 * S + x * taps;
  const uint8_t* p = box + (static_cast<int64_t>(y) * w + first) * 3 + c;
  int32_t acc = int32_t{1} << (kPrecisionBits - 1);
  for (int j = 0; j < n; ++j) acc += static_cast<int32_t>(p[3 * j]) * k[j];
  return clip8(acc);
}

// Output row y (of S), column x, channel c: the vertical pass over the horizontal pass's rows
// [row_begin, ...), each S * 3 bytes, starting at `rows`.
MF_CROPS_HD inline uint8_t vertical(const uint8_t* rows, int row_begin, const int32_t* table, int S, int taps, int y,
                                    int x, int c) {
  const int first = table[y], n = table[S + y];
  const int32_t* k = table + 2 * S + y * taps;
  const uint8_t* p = rows + (static_cast<int64_t>(first - row_begin) * S + x) * 3 + c;
  int32_t acc = int32_t{1} << (kPrecisionBits - 1);
  for (int j = 0; j < n; ++j) acc += static_cast<int32_t>(p[static_cast<int64_t>(j) * S * 3]) * k[j];
  return clip8(acc);
}

}  // namespace mf::crops

#if !defined(__CUDACC__)
#include "io/image.h"
#include "io/resample.h"

namespace mf::crops {

// Packs the box (x0, y0, w, h) of `img`, to be resized to S × S with `interp` and flipped or not,
// into `row` (room for row_floats fp32 values) and `header`. False, writing nothing, when it does
// not fit, when the interpolation is nearest (not a convolution) or when a filter's sums could
// overflow 32 bits: the caller then finishes the sample itself.
bool pack(const Image& img, int x0, int y0, int w, int h, bool flip, int S, Interpolation interp, float* row,
          int64_t row_floats, int32_t* header);

// The finished [S, S, 3] image of one sample's row (packed or finished): the reference that every
// backend's augment_crops must match. `table` is [3][256]: each byte's normalised value.
void finish(const float* row, const int32_t* header, int S, const float* table, float* out);

}  // namespace mf::crops
#endif
