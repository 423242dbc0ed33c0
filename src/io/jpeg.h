// JPEG decoding with libjpeg-turbo (Debian's libjpeg62-turbo), the library Pillow decodes JPEGs
// with: the same inverse DCT (islow) and the same chroma upsampling, so that the pixels are exactly
// Pillow's Image.open(...).convert('RGB'), and about 2.5x faster than stb_image's decoder
// (bench/micro/input_pipeline.cpp).
// See docs/training.md ("Data").
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "io/image.h"

namespace mf {

// Decodes a baseline, progressive or arithmetic-coded JPEG whose components are grey, YCbCr or RGB
// into `out` (8-bit RGB) and returns true. Returns false, leaving `out` alone, for a JPEG that is
// CMYK or YCCK (left to stb_image, as before). Throws mf::Error "cannot decode image WHAT: reason"
// for a damaged or truncated file, more than `max_pixels` pixels, or more than 500 scans (a
// progressive file built to make decoding slow: libjpeg-turbo's advice against such files).
bool decode_jpeg(std::span<const uint8_t> bytes, const std::string& what, int64_t max_pixels, Image& out);

// True when the data starts with JPEG's start-of-image marker.
inline bool looks_like_jpeg(std::span<const uint8_t> b) { return b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF; }

}  // namespace mf
