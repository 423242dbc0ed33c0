// libFuzzer target for the image decoder and the resampling built on it: any input must either
// decode or throw mf::Error, and whatever decodes must survive resize, center crop and the eval
// transform.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "io/image.h"
#include "io/resample.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    // 4 Mpixel cap: large enough for real photos' code paths, small enough for fast iterations.
    const mf::Image img = mf::decode_image(std::span<const uint8_t>(data, size), "fuzz", int64_t{1} << 22);
    // Sizes and filters from the first bytes, which for real images are fixed magic numbers, so
    // also from the middle of the input to get variety.
    const uint8_t a = data[0], b = data[1 % size], c = data[size / 2];
    const int w = 1 + a % 64, h = 1 + b % 64;
    const auto interp = static_cast<mf::Interpolation>(c % 3);
    const mf::Image small = mf::resize(img, w, h, interp);
    if (small.rgb.size() != static_cast<size_t>(w) * h * 3) __builtin_trap();
    const mf::Image crop = mf::center_crop(small, 1 + c % 80, 1 + (c / 3) % 80);
    (void)crop;
    mf::EvalTransform t;
    t.size = 16;
    t.crop_pct = (c & 8) ? 0.875 : 1.0;
    t.crop_mode = (c & 16) ? "squash" : "center";
    t.interpolation = interp;
    const mf::Tensor out = mf::eval_transform(img, t);
    if (out.numel() != 16 * 16 * 3) __builtin_trap();
  } catch (const mf::Error&) {
    // Bad input: the expected outcome for most fuzz inputs.
  }
  return 0;
}
