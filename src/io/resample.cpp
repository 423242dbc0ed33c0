// Pillow's resampling, rewritten from its observable behaviour (Pillow 9.4, checked pixel for pixel
// by tools/golden/make_image_fixtures.py and tests/test_image.cpp, and on thousands of random
// sizes while this was written). The details that matter for bit-exactness, each found or
// confirmed by experiment:
//  * Bilinear and bicubic are separable convolutions, horizontal pass first, with an 8-bit
//    intermediate image (vertical-first differed from Pillow on all of 96 random 2-D resizes); a
//    pass whose axis keeps its size is skipped (it would be the identity).
//  * Output x samples around center = (x + 0.5) * in / out; the kernel (support 1 for bilinear,
//    2 for bicubic) is stretched by max(in / out, 1) (antialiasing when shrinking) and covers inputs
//    [trunc(center - support + 0.5), trunc(center + support + 0.5)) clipped to the image.
//  * Weights are normalised to sum 1 in double, then rounded half away from zero to 22 fractional
//    bits; each output is (2^21 + sum in * k) >> 22 clipped to [0, 255]. Dividing by the filter
//    scale or multiplying by its inverse, and dividing by the sum or multiplying by its inverse,
//    gave identical coefficients on every one of 3000 random size pairs: not a detail to worry about.
//  * Nearest does not go through the convolution at all: Pillow maps output x to input
//    trunc(in / out * 0.5 + x * in / out) where the position is *accumulated* by repeated addition
//    in double. That sometimes lands just below an integer where floor((x + 0.5) * in / out) would
//    not (e.g. 348 -> 1479 columns, x = 42): the direct formula disagreed with Pillow on ~20% of
//    random size pairs, the accumulated one on none of 5000.
#include "io/resample.h"

#include <algorithm>
#include <cmath>
#include <climits>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace mf {

namespace {

// Fractional bits of the fixed-point weights: 32 bits minus 8 for the pixel value minus 2 of
// headroom for the kernels' overshoot (Pillow's choice; results depend on it).
constexpr int kPrecisionBits = 22;
// Largest image resize() makes: beyond this a bad request (e.g. crop_pct near 0) would only end in
// an allocation failure.
constexpr int64_t kMaxOutputPixels = int64_t{1} << 28;
// Below this many multiply-adds a pass runs on one thread (thread start-up would dominate).
constexpr int64_t kParallelWork = int64_t{1} << 18;

double bicubic_filter(double t) {
  // Keys' cubic convolution with a = -0.5, as Pillow (and most image libraries) use. With
  // -march=native the compiler may fuse these multiply-adds where Pillow's build does not; that
  // moves a weight by an ulp, and after rounding to 22 bits it changed no coefficient of any of
  // 176,400 (in, out) size pairs tried, so no barrier against contraction is worth its cost here.
  constexpr double a = -0.5;
  t = std::fabs(t);
  if (t < 1.0) return ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0;
  if (t < 2.0) return (((t - 5.0) * t + 8.0) * t - 4.0) * a;
  return 0.0;
}

double bilinear_filter(double t) {
  t = std::fabs(t);
  return t < 1.0 ? 1.0 - t : 0.0;
}

// The fixed-point weights of one 1-D pass (resample.h).
using Kernel = ResampleTaps;
static_assert(kPrecisionBits == kResamplePrecisionBits);

Kernel make_kernel(int in_size, int out_size, Interpolation interp) {
  const bool cubic = interp == Interpolation::Bicubic;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = (cubic ? 2.0 : 1.0) * filter_scale;

  Kernel kn;
  kn.first.resize(static_cast<size_t>(out_size));
  kn.count.resize(static_cast<size_t>(out_size));
  for (int x = 0; x < out_size; ++x) {
    const double center = (x + 0.5) * scale;
    // Truncation toward zero, then clipping to the image (what Pillow does; floor would agree, as
    // only negative values differ and those clip to 0). Clipping before the conversion to int gives
    // the same result and keeps the conversion in range for any image size.
    const int lo = static_cast<int>(std::max(center - support + 0.5, 0.0));
    const int hi = static_cast<int>(std::min(center + support + 0.5, static_cast<double>(in_size)));
    kn.first[static_cast<size_t>(x)] = lo;
    kn.count[static_cast<size_t>(x)] = std::max(hi - lo, 0);
    kn.stride = std::max(kn.stride, hi - lo);
  }
  kn.k.assign(static_cast<size_t>(out_size) * static_cast<size_t>(kn.stride), 0);

  std::vector<double> w(static_cast<size_t>(kn.stride));
  for (int x = 0; x < out_size; ++x) {
    const double center = (x + 0.5) * scale;
    const int lo = kn.first[static_cast<size_t>(x)];
    const int n = kn.count[static_cast<size_t>(x)];
    double sum = 0.0;
    for (int j = 0; j < n; ++j) {
      const double t = (j + lo - center + 0.5) / filter_scale;
      w[static_cast<size_t>(j)] = cubic ? bicubic_filter(t) : bilinear_filter(t);
      sum += w[static_cast<size_t>(j)];
    }
    int32_t* k = kn.k.data() + static_cast<size_t>(x) * static_cast<size_t>(kn.stride);
    for (int j = 0; j < n; ++j) {
      const double v = sum != 0.0 ? w[static_cast<size_t>(j)] / sum : w[static_cast<size_t>(j)];
      const double f = v * (1 << kPrecisionBits);
      k[j] = static_cast<int32_t>(v < 0.0 ? f - 0.5 : f + 0.5);
    }
  }
  int64_t most = 0, least = 0;  // the largest and smallest possible sums of one output
  for (int x = 0; x < out_size; ++x) {
    int64_t pos = 0, neg = 0;
    const int32_t* k = kn.k.data() + static_cast<size_t>(x) * static_cast<size_t>(kn.stride);
    for (int j = 0; j < kn.count[static_cast<size_t>(x)]; ++j) (k[j] > 0 ? pos : neg) += k[j];
    most = std::max(most, 255 * pos);
    least = std::min(least, 255 * neg);
  }
  const int64_t half = int64_t{1} << (kPrecisionBits - 1);
  kn.fits32 = half + most <= INT32_MAX && half + least >= INT32_MIN;
  return kn;
}

// Pillow accumulates in a 32-bit int. The positive weights of a normalised kernel sum to at most
// about 1.09 (the negative lobes of the cubic take the rest), and 2^21 + 255 * 1.09 * 2^22 < 2^31,
// so real kernels fit; but a contrived one (millions of tiny taps, each rounded up from 0.5 to 1)
// could overflow, which is undefined behaviour in C. A 64-bit accumulator gives the same bytes
// wherever Pillow's result is defined, and never overflows.
inline uint8_t clip8(int64_t acc) {
  const int64_t v = acc >> kPrecisionBits;  // arithmetic shift: rounds toward -inf like Pillow
  return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255));
}

inline uint8_t clip8(int32_t acc) { return static_cast<uint8_t>(std::clamp(acc >> kPrecisionBits, 0, 255)); }

// The horizontal pass eight rows at a time, for kernels whose sums fit 32 bits: the eight rows'
// pixels are interleaved column by column (24 values: row, channel) and widened to int32 once, so
// that every tap of an output column is one multiply-add of 24 contiguous values by one weight, in
// three 8-lane vectors (the one-row loop below does three scalar ones). Integer sums in any order
// are the same sums, so the bytes are those of the one-row pass. With the int32 vertical pass, a
// RandomResizedCrop-sized bicubic resize (crops of 120x90 to 420x290 to 224x224, one thread) takes
// 0.59x the time of the int64 passes.
using I32x8 = int32_t __attribute__((vector_size(32)));

void horizontal_pass_8rows(const uint8_t* src, size_t src_stride, int in_w, int row_begin, int row_end,
                           const Kernel& kn, uint8_t* dst, int out_w) {
  constexpr int R = 8, L = R * 3;
  const int blocks = (row_end - row_begin + R - 1) / R;
  const int64_t work = static_cast<int64_t>(row_end - row_begin) * out_w * kn.stride * 3;
#pragma omp parallel if (work > kParallelWork)
  {
    std::vector<int32_t> cols(static_cast<size_t>(in_w) * L);  // widened once here, not once per tap
#pragma omp for schedule(static)
    for (int blk = 0; blk < blocks; ++blk) {
      const int y0 = row_begin + blk * R, rows = std::min(R, row_end - y0);
      if (rows < R) std::fill(cols.begin(), cols.end(), 0);
      for (int r = 0; r < rows; ++r) {
        const uint8_t* in = src + static_cast<size_t>(y0 + r) * src_stride;
        int32_t* col = cols.data() + static_cast<size_t>(r) * 3;
        for (int x = 0; x < in_w; ++x, col += L, in += 3) {
          col[0] = in[0];
          col[1] = in[1];
          col[2] = in[2];
        }
      }
      for (int x = 0; x < out_w; ++x) {
        const int32_t* k = kn.k.data() + static_cast<size_t>(x) * static_cast<size_t>(kn.stride);
        const int32_t* p = cols.data() + static_cast<size_t>(kn.first[static_cast<size_t>(x)]) * L;
        // Three 8-lane accumulators in registers (GCC/Clang vector extensions: AVX2 with
        // -march=native, two SSE registers each without).
        const I32x8 half = I32x8{} + (int32_t{1} << (kPrecisionBits - 1));
        I32x8 a0 = half, a1 = half, a2 = half;
        for (int j = 0, n = kn.count[static_cast<size_t>(x)]; j < n; ++j, p += L) {
          const int32_t kj = k[j];
          I32x8 b0, b1, b2;
          std::memcpy(&b0, p, 32);
          std::memcpy(&b1, p + 8, 32);
          std::memcpy(&b2, p + 16, 32);
          a0 += b0 * kj;
          a1 += b1 * kj;
          a2 += b2 * kj;
        }
        int32_t acc[L];
        std::memcpy(acc, &a0, 32);
        std::memcpy(acc + 8, &a1, 32);
        std::memcpy(acc + 16, &a2, 32);
        for (int r = 0; r < rows; ++r) {
          uint8_t* out = dst + (static_cast<size_t>(y0 + r - row_begin) * static_cast<size_t>(out_w) + static_cast<size_t>(x)) * 3;
          for (int c = 0; c < 3; ++c) out[c] = clip8(acc[r * 3 + c]);
        }
      }
    }
  }
}

// Resamples rows [row_begin, row_end) of `src` (in_w pixels, rows `src_stride` bytes apart) to out_w
// columns.
void horizontal_pass(const uint8_t* src, size_t src_stride, int in_w, int row_begin, int row_end, const Kernel& kn,
                     uint8_t* dst, int out_w) {
  if (kn.fits32) return horizontal_pass_8rows(src, src_stride, in_w, row_begin, row_end, kn, dst, out_w);
  const int64_t work = static_cast<int64_t>(row_end - row_begin) * out_w * kn.stride * 3;
#pragma omp parallel for schedule(static) if (work > kParallelWork)
  for (int y = row_begin; y < row_end; ++y) {
    const uint8_t* in = src + static_cast<size_t>(y) * src_stride;
    uint8_t* out = dst + static_cast<size_t>(y - row_begin) * static_cast<size_t>(out_w) * 3;
    for (int x = 0; x < out_w; ++x) {
      const int32_t* k = kn.k.data() + static_cast<size_t>(x) * static_cast<size_t>(kn.stride);
      const uint8_t* p = in + static_cast<size_t>(kn.first[static_cast<size_t>(x)]) * 3;
      int64_t r = int64_t{1} << (kPrecisionBits - 1), g = r, b = r;
      for (int j = 0, n = kn.count[static_cast<size_t>(x)]; j < n; ++j, p += 3) {
        r += static_cast<int64_t>(p[0]) * k[j];
        g += static_cast<int64_t>(p[1]) * k[j];
        b += static_cast<int64_t>(p[2]) * k[j];
      }
      out[3 * x + 0] = clip8(r);
      out[3 * x + 1] = clip8(g);
      out[3 * x + 2] = clip8(b);
    }
  }
}

// Resamples the columns of `src` (rows `src_stride` bytes apart), whose row 0 is input row
// `row_offset`, to out_h rows. Acc is int32_t for kernels that fit it (twice the vector lanes).
template <typename Acc>
void vertical_pass_with(const uint8_t* src, size_t src_stride, int row_offset, int width, const Kernel& kn,
                        uint8_t* dst, int out_h) {
  const size_t row_bytes = static_cast<size_t>(width) * 3;
  const int64_t work = static_cast<int64_t>(out_h) * width * kn.stride * 3;
#pragma omp parallel if (work > kParallelWork)
  {
    std::vector<Acc> acc(row_bytes);  // one per thread, not one per row
#pragma omp for schedule(static)
    for (int y = 0; y < out_h; ++y) {
      const int32_t* k = kn.k.data() + static_cast<size_t>(y) * static_cast<size_t>(kn.stride);
      const uint8_t* in = src + static_cast<size_t>(kn.first[static_cast<size_t>(y)] - row_offset) * src_stride;
      const int n = kn.count[static_cast<size_t>(y)];
      uint8_t* out = dst + static_cast<size_t>(y) * row_bytes;
      // Row by row over the taps, so that memory is read in order and the inner loop vectorises.
      std::fill(acc.begin(), acc.end(), Acc{1} << (kPrecisionBits - 1));
      for (int j = 0; j < n; ++j) {
        const uint8_t* row = in + static_cast<size_t>(j) * src_stride;
        const Acc kj = k[j];
        for (size_t i = 0; i < row_bytes; ++i) acc[i] += static_cast<Acc>(row[i]) * kj;
      }
      for (size_t i = 0; i < row_bytes; ++i) out[i] = clip8(acc[i]);
    }
  }
}

void vertical_pass(const uint8_t* src, size_t src_stride, int row_offset, int width, const Kernel& kn, uint8_t* dst,
                   int out_h) {
  if (kn.fits32) return vertical_pass_with<int32_t>(src, src_stride, row_offset, width, kn, dst, out_h);
  vertical_pass_with<int64_t>(src, src_stride, row_offset, width, kn, dst, out_h);
}

// Source index of each output position for nearest-neighbour scaling (see the note at the top).
std::vector<int> nearest_index(int in_size, int out_size) {
  const double step = static_cast<double>(in_size) / out_size;
  std::vector<int> idx(static_cast<size_t>(out_size));
  double pos = step * 0.5;
  for (int i = 0; i < out_size; ++i, pos += step) {
    // Rounding drift would need ~1e8 outputs to reach the next pixel; clamp rather than trust that.
    idx[static_cast<size_t>(i)] = std::clamp(static_cast<int>(pos), 0, in_size - 1);
  }
  return idx;
}

// The box's pixel (x, y) is img's (x0 + x, y0 + y).
struct Box {
  int x0, y0, w, h;
};

const uint8_t* box_origin(const Image& img, const Box& b) {
  return img.rgb.data() + (static_cast<size_t>(b.y0) * static_cast<size_t>(img.width) + static_cast<size_t>(b.x0)) * 3;
}

Image resize_nearest(const Image& img, const Box& box, int width, int height) {
  const std::vector<int> xs = nearest_index(box.w, width);
  const std::vector<int> ys = nearest_index(box.h, height);
  const uint8_t* origin = box_origin(img, box);
  const size_t stride = static_cast<size_t>(img.width) * 3;
  Image out;
  out.width = width;
  out.height = height;
  out.rgb.resize(static_cast<size_t>(width) * static_cast<size_t>(height) * 3);
  for (int y = 0; y < height; ++y) {
    const uint8_t* in = origin + static_cast<size_t>(ys[static_cast<size_t>(y)]) * stride;
    uint8_t* o = out.rgb.data() + static_cast<size_t>(y) * width * 3;
    for (int x = 0; x < width; ++x) std::copy_n(in + static_cast<size_t>(xs[static_cast<size_t>(x)]) * 3, 3, o + 3 * x);
  }
  return out;
}

void check_image(const Image& img, const char* what) {
  MF_CHECK(img.width > 0 && img.height > 0, "{}: empty image ({}x{})", what, img.width, img.height);
  MF_CHECK(img.rgb.size() == static_cast<size_t>(img.width) * static_cast<size_t>(img.height) * 3,
           "{}: image of {}x{} pixels holds {} bytes instead of {}", what, img.width, img.height, img.rgb.size(),
           static_cast<size_t>(img.width) * static_cast<size_t>(img.height) * 3);
}

void check_size(int width, int height, const char* what) {
  MF_CHECK(width > 0 && height > 0, "{}: invalid output size {}x{}", what, width, height);
  MF_CHECK(static_cast<int64_t>(width) * height <= kMaxOutputPixels, "{}: output size {}x{} is more than {} pixels",
           what, width, height, kMaxOutputPixels);
}

// Python's round(n / 2) for n >= 0: halves go to the even neighbour.
int half_round_even(int n) {
  const int q = n / 2;
  return (n % 2 == 1 && q % 2 == 1) ? q + 1 : q;
}

}  // namespace

ResampleTaps resample_taps(int in_size, int out_size, Interpolation interp) {
  MF_CHECK(interp != Interpolation::Nearest && in_size > 0 && out_size > 0,
           "resample_taps: a bilinear or bicubic pass between positive sizes, not {} -> {}", in_size, out_size);
  return make_kernel(in_size, out_size, interp);
}

std::pair<int, int> inputs_read(const ResampleTaps& t) {
  int begin = INT_MAX, end = 0;
  for (size_t i = 0; i < t.first.size(); ++i) {
    if (t.count[i] == 0) continue;
    begin = std::min(begin, t.first[i]);
    end = std::max(end, t.first[i] + t.count[i]);
  }
  return end <= begin ? std::pair{0, 0} : std::pair{begin, end};
}

Interpolation parse_interpolation(const std::string& name) {
  if (name == "nearest") return Interpolation::Nearest;
  if (name == "bilinear") return Interpolation::Bilinear;
  if (name == "bicubic") return Interpolation::Bicubic;
  fail("unknown interpolation '{}' (expected nearest, bilinear or bicubic)", name);
}

Image resize(const Image& img, int width, int height, Interpolation interp) {
  check_image(img, "resize");
  check_size(width, height, "resize");
  return resize_region(img, 0, 0, img.width, img.height, width, height, interp);
}

Image resize_region(const Image& img, int x0, int y0, int w, int h, int width, int height, Interpolation interp) {
  check_image(img, "resize_region");
  check_size(width, height, "resize_region");
  MF_CHECK(x0 >= 0 && y0 >= 0 && w > 0 && h > 0 && w <= img.width - x0 && h <= img.height - y0,
           "resize_region: the box {}x{} at ({}, {}) is not inside the {}x{} image", w, h, x0, y0, img.width,
           img.height);
  const Box box{x0, y0, w, h};
  const uint8_t* origin = box_origin(img, box);
  const size_t stride = static_cast<size_t>(img.width) * 3;
  if (width == w && height == h) {  // a crop
    Image out;
    out.width = w;
    out.height = h;
    out.rgb.resize(static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
    for (int y = 0; y < h; ++y)
      std::copy_n(origin + static_cast<size_t>(y) * stride, static_cast<size_t>(w) * 3,
                  out.rgb.data() + static_cast<size_t>(y) * static_cast<size_t>(w) * 3);
    return out;
  }
  if (interp == Interpolation::Nearest) return resize_nearest(img, box, width, height);

  const bool horizontal = width != w;
  const bool vertical = height != h;
  Image out;
  out.width = width;
  out.height = height;
  out.rgb.resize(static_cast<size_t>(width) * static_cast<size_t>(height) * 3);

  if (!vertical) {
    horizontal_pass(origin, stride, w, 0, h, make_kernel(w, width, interp), out.rgb.data(), width);
    return out;
  }
  const Kernel vk = make_kernel(h, height, interp);
  if (!horizontal) {
    vertical_pass(origin, stride, 0, width, vk, out.rgb.data(), height);
    return out;
  }
  // Only the input rows that the vertical pass reads need the horizontal one (as in Pillow; this
  // saves work when enlarging, and does not change any value).
  const auto [row_begin, row_end] = inputs_read(vk);
  std::vector<uint8_t> tmp(static_cast<size_t>(row_end - row_begin) * static_cast<size_t>(width) * 3);
  horizontal_pass(origin, stride, w, row_begin, row_end, make_kernel(w, width, interp), tmp.data(), width);
  vertical_pass(tmp.data(), static_cast<size_t>(width) * 3, row_begin, width, vk, out.rgb.data(), height);
  return out;
}

Image center_crop(const Image& img, int width, int height) {
  check_image(img, "center_crop");
  check_size(width, height, "center_crop");
  // torchvision pads (with zeros) only the axes where the crop is larger than the image, the odd
  // pixel going to the right / bottom, then crops the padded image at round((in - out) / 2).
  const int pad_left = width > img.width ? (width - img.width) / 2 : 0;
  const int pad_top = height > img.height ? (height - img.height) / 2 : 0;
  const int pad_right = width > img.width ? (width - img.width + 1) / 2 : 0;
  const int pad_bottom = height > img.height ? (height - img.height + 1) / 2 : 0;
  const int padded_w = img.width + pad_left + pad_right;
  const int padded_h = img.height + pad_top + pad_bottom;
  // Offsets into the original image of the crop's top-left corner (negative inside the padding).
  const int left = half_round_even(padded_w - width) - pad_left;
  const int top = half_round_even(padded_h - height) - pad_top;

  Image out;
  out.width = width;
  out.height = height;
  out.rgb.assign(static_cast<size_t>(width) * static_cast<size_t>(height) * 3, 0);
  const int x0 = std::max(0, -left);
  const int x1 = std::min(width, img.width - left);
  for (int y = 0; y < height; ++y) {
    const int sy = y + top;
    if (sy < 0 || sy >= img.height || x1 <= x0) continue;
    const uint8_t* in = img.rgb.data() + (static_cast<size_t>(sy) * img.width + static_cast<size_t>(x0 + left)) * 3;
    std::copy_n(in, static_cast<size_t>(x1 - x0) * 3, out.rgb.data() + (static_cast<size_t>(y) * width + x0) * 3);
  }
  return out;
}

Tensor eval_transform(const Image& img, const EvalTransform& t) {
  check_image(img, "eval_transform");
  MF_CHECK(t.size > 0, "eval_transform: invalid size {}", t.size);
  MF_CHECK(std::isfinite(t.crop_pct) && t.crop_pct > 0, "eval_transform: invalid crop_pct {}", t.crop_pct);
  for (int c = 0; c < 3; ++c)
    MF_CHECK(std::isfinite(t.std[c]) && t.std[c] != 0.f, "eval_transform: invalid std {} for channel {}", t.std[c], c);

  // timm: scale_size = math.floor(img_size / crop_pct).
  const double scale_d = std::floor(t.size / t.crop_pct);
  MF_CHECK(scale_d >= 1 && scale_d <= kMaxOutputPixels, "eval_transform: size {} / crop_pct {} gives resize size {}",
           t.size, t.crop_pct, scale_d);
  const int scale = static_cast<int>(scale_d);

  int out_w = 0, out_h = 0;
  if (t.crop_mode == "squash") {
    out_w = out_h = scale;
  } else if (t.crop_mode == "center") {
    // torchvision Resize(int): the shorter side becomes `scale`, the longer int(scale * long / short),
    // where Python divides the exact integer product (exact in a double at these sizes) by short.
    const bool portrait = img.width <= img.height;
    const int64_t shorter = portrait ? img.width : img.height;
    const int64_t longer = portrait ? img.height : img.width;
    const double long_d = static_cast<double>(scale * longer) / static_cast<double>(shorter);
    MF_CHECK(long_d <= kMaxOutputPixels, "eval_transform: resizing {}x{} to a shorter side of {} is too large",
             img.width, img.height, scale);
    const int new_long = static_cast<int>(long_d);
    out_w = portrait ? scale : new_long;
    out_h = portrait ? new_long : scale;
  } else {
    fail("eval_transform: unknown crop_mode '{}' (expected center or squash)", t.crop_mode);
  }

  const Image cropped = center_crop(resize(img, out_w, out_h, t.interpolation), t.size, t.size);
  Tensor out = Tensor::empty(Shape{t.size, t.size, 3});
  float* o = out.data();
  const size_t n = cropped.rgb.size();
  // ToTensor: float32(pixel) / 255 (a division, not a multiplication by 1/255); Normalize: then
  // (v - mean) / std, all in float32, so the values match torchvision's bit for bit.
  for (size_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(i % 3);
    const float v = static_cast<float>(cropped.rgb[i]) / 255.f;
    o[i] = (v - t.mean[static_cast<size_t>(c)]) / t.std[static_cast<size_t>(c)];
  }
  return out;
}

}  // namespace mf
