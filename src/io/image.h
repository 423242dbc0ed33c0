// Image decoding to 8-bit RGB: JPEG with libjpeg-turbo (io/jpeg.h), PNG, BMP and the other formats
// stb_image reads with stb_image.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace mf {

struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3, row-major, interleaved R, G, B
};

// Grey and grey+alpha images are expanded to RGB; alpha is dropped (as PIL's convert('RGB') does).
// Corrupt or unsupported data: mf::Error "cannot decode image WHAT: reason".
// Images larger than `max_pixels` are refused before decoding (decompression bombs), with their own
// message: "cannot decode image WHAT: WxH pixels is more than the limit of N (see --max-image-pixels)",
// also for sizes stb_image itself will not describe.
constexpr int64_t kDefaultMaxImagePixels = int64_t{1} << 28;
Image decode_image(std::span<const uint8_t> bytes, const std::string& what,
                   int64_t max_pixels = kDefaultMaxImagePixels);
Image load_image(const std::string& path, int64_t max_pixels = kDefaultMaxImagePixels);

}  // namespace mf
