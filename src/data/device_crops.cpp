#include "data/device_crops.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "data/dataset.h"

namespace mf::crops {

// device_crops.h spells the fixed point for nvcc, which does not see resample.h: the same 22 bits.
static_assert(kPrecisionBits == kResamplePrecisionBits);

namespace {

size_t align16(size_t n) { return (n + 15) & ~size_t{15}; }

// Writes first[S], count[S], k[S * stride] at dst (int32).
void write_table(const ResampleTaps& t, int S, uint8_t* dst) {
  std::vector<int32_t> v;
  v.reserve(static_cast<size_t>(S) * (2 + static_cast<size_t>(t.stride)));
  v.insert(v.end(), t.first.begin(), t.first.end());
  v.insert(v.end(), t.count.begin(), t.count.end());
  v.insert(v.end(), t.k.begin(), t.k.end());
  std::memcpy(dst, v.data(), v.size() * sizeof(int32_t));
}

size_t table_bytes(const ResampleTaps& t, int S) {
  return static_cast<size_t>(S) * (2 + static_cast<size_t>(t.stride)) * sizeof(int32_t);
}

}  // namespace

bool pack(const Image& img, int x0, int y0, int w, int h, bool flip, int S, Interpolation interp, float* row,
          int64_t row_floats, int32_t* header) {
  MF_CHECK(x0 >= 0 && y0 >= 0 && w > 0 && h > 0 && w <= img.width - x0 && h <= img.height - y0 && S > 0,
           "augment: the box {}x{} at ({}, {}) is not inside the {}x{} image", w, h, x0, y0, img.width, img.height);
  if (interp == Interpolation::Nearest) return false;
  const size_t room = static_cast<size_t>(row_floats) * sizeof(float);
  const size_t box_bytes = static_cast<size_t>(w) * static_cast<size_t>(h) * 3;
  if (box_bytes > room) return false;  // before building tables for a box that cannot fit anyway
  const ResampleTaps ht = resample_taps(w, S, interp), vt = resample_taps(h, S, interp);
  if (!ht.fits32 || !vt.fits32) return false;
  const size_t h_at = align16(box_bytes), v_at = align16(h_at + table_bytes(ht, S));
  if (v_at + table_bytes(vt, S) > room) return false;

  auto* bytes = reinterpret_cast<uint8_t*>(row);
  for (int y = 0; y < h; ++y)
    std::memcpy(bytes + static_cast<size_t>(y) * static_cast<size_t>(w) * 3,
                img.rgb.data() + (static_cast<size_t>(y0 + y) * static_cast<size_t>(img.width) + static_cast<size_t>(x0)) * 3,
                static_cast<size_t>(w) * 3);
  write_table(ht, S, bytes + h_at);
  write_table(vt, S, bytes + v_at);
  const auto [begin, end] = inputs_read(vt);
  std::fill(header, header + kHeaderInts, 0);
  header[kMode] = kPacked;
  header[kWidth] = w;
  header[kHeight] = h;
  header[kFlip] = flip ? 1 : 0;
  header[kHTaps] = ht.stride;
  header[kVTaps] = vt.stride;
  header[kHTable] = static_cast<int32_t>(h_at);
  header[kVTable] = static_cast<int32_t>(v_at);
  header[kRowBegin] = begin;
  header[kRowEnd] = end;
  return true;
}

void finish(const float* row, const int32_t* header, int S, const float* table, float* out) {
  const int64_t n = static_cast<int64_t>(S) * S * 3;
  if (header[kMode] == kFinished) {
    std::copy_n(row, n, out);
    return;
  }
  MF_CHECK(header[kMode] == kPacked, "augment_crops: a sample's header has mode {}", header[kMode]);
  const auto* bytes = reinterpret_cast<const uint8_t*>(row);
  const int w = header[kWidth], begin = header[kRowBegin], end = header[kRowEnd];
  // The tables copied out as int32 (the row's storage is fp32: no aliasing through a cast).
  auto table_of = [&](int at, int taps) {
    std::vector<int32_t> t(static_cast<size_t>(S) * (2 + static_cast<size_t>(taps)));
    std::memcpy(t.data(), bytes + at, t.size() * sizeof(int32_t));
    return t;
  };
  const std::vector<int32_t> htab = table_of(header[kHTable], header[kHTaps]);
  const std::vector<int32_t> vtab = table_of(header[kVTable], header[kVTaps]);
  const int32_t* ht = htab.data();
  const int32_t* vt = vtab.data();
  std::vector<uint8_t> rows(static_cast<size_t>(end - begin) * static_cast<size_t>(S) * 3);
  for (int y = begin; y < end; ++y)
    for (int x = 0; x < S; ++x)
      for (int c = 0; c < 3; ++c)
        rows[(static_cast<size_t>(y - begin) * static_cast<size_t>(S) + static_cast<size_t>(x)) * 3 + static_cast<size_t>(c)] =
            horizontal(bytes, w, ht, S, header[kHTaps], y, x, c);
  const bool flip = header[kFlip] != 0;
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      const int sx = flip ? S - 1 - x : x;
      for (int c = 0; c < 3; ++c)
        out[(static_cast<int64_t>(y) * S + x) * 3 + c] =
            table[c * 256 + vertical(rows.data(), begin, vt, S, header[kVTaps], y, sx, c)];
    }
}

}  // namespace mf::crops

namespace mf {

bool Dataset::get_packed(int64_t, Rng&, float*, int64_t, int32_t*, Sample&) const {
  fail("{}: its samples cannot be augmented by the backend", describe());
}

}  // namespace mf
