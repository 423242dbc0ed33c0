// Resizing and cropping that reproduce PIL (Pillow) exactly on 8-bit RGB images, and timm's
// evaluation transform built from them, so that `metaformer classify` feeds the model the same
// tensor that timm would.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/image.h"

namespace mf {

enum class Interpolation { Nearest, Bilinear, Bicubic };
Interpolation parse_interpolation(const std::string& name);  // "nearest" | "bilinear" | "bicubic"

// Pillow's Image.resize((width, height), filter) with its default box: separable convolution whose
// support widens with the downscaling factor (antialiasing), fixed-point coefficients, horizontal
// pass first, 8-bit rounding and clipping after each pass.
Image resize(const Image& img, int width, int height, Interpolation interp);

// resize(crop(img, box), ...) without the copy: Pillow's img.crop((x0, y0, x0 + w, y0 + h)).resize(...),
// as torchvision's RandomResizedCrop does it. The box must lie inside the image.
Image resize_region(const Image& img, int x0, int y0, int w, int h, int width, int height, Interpolation interp);

// The fixed-point weights of one 1-D bilinear or bicubic pass from in_size to out_size, as resize()
// applies them: output i reads count[i] inputs from first[i], weighted by k[i * stride + j] (22
// fractional bits); fits32 when every output's sum fits a 32-bit accumulator (every real filter).
// Exposed for the backends' augment_crops (src/data/device_crops.h), which must use the same ones.
struct ResampleTaps {
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> k;
  int stride = 0;
  bool fits32 = false;
};
ResampleTaps resample_taps(int in_size, int out_size, Interpolation interp);
// The inputs [first, second) that any output of `t` reads ({0, 0} when none reads any): the rows a
// horizontal pass must produce for a vertical pass with these taps.
std::pair<int, int> inputs_read(const ResampleTaps& t);
constexpr int kResamplePrecisionBits = 22;

// torchvision CenterCrop: offsets round((in - out) / 2); pads with zeros when the crop is larger.
Image center_crop(const Image& img, int width, int height);

struct EvalTransform {
  int size = 224;              // square model input
  double crop_pct = 1.0;
  Interpolation interpolation = Interpolation::Bicubic;
  std::string crop_mode = "center";  // "center" (resize shorter side) or "squash" (resize both sides)
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
};

// timm's eval transform: resize to floor(size / crop_pct) (shorter side, or both sides for
// "squash"), center-crop size x size, scale to [0, 1], normalise. Returns [size, size, 3] (HWC).
Tensor eval_transform(const Image& img, const EvalTransform& t);

}  // namespace mf
