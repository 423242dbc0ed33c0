#include "io/image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>

// Debian's libstb-dev builds the implementation into libstb.so, so STB_IMAGE_IMPLEMENTATION must
// not be defined here.
#include <stb/stb_image.h>

#include "core/error.h"
#include "io/jpeg.h"

namespace mf {

namespace {

// stb_image keeps the reason for its last failure in a variable that is thread-local in the build
// Debian ships (v2.27 compiled as C11, which has _Thread_local) but a process-wide global in builds
// made with STBI_NO_THREAD_LOCALS or by older compilers. There, two threads failing at once could
// each report the other's reason: the text may then be wrong, but it always points to one of stb's
// static strings, so nothing worse than a misleading message can happen.
std::string stb_reason() {
  const char* r = stbi_failure_reason();
  if (!r) return "unknown error";
  // stb's shortest message is also the most common one for a wrong file; say what it means.
  if (std::strcmp(r, "unknown image type") == 0)
    return "unknown image format (not JPEG, PNG, BMP, GIF, PSD, TGA, HDR, PIC or PNM)";
  return r;
}

// Reads a whole file. io/file.cpp's read_file does the same for the rest of the project; this one
// keeps the image reader buildable on its own (the image fuzz target links nothing else).
std::vector<uint8_t> read_image_file(const std::string& path) {
  struct Fd {
    int fd;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  } file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  const int fd = file.fd;
  if (fd < 0) fail("cannot open image {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail("cannot open image {}: {}", path, std::strerror(errno));
  MF_CHECK(S_ISREG(st.st_mode), "cannot open image {}: not a regular file", path);
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot read image {}: {}", path, std::strerror(errno));
    if (n == 0) break;  // the file shrank while we read it: decode what is there
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return bytes;
}

// The size a PNG, BMP or JPEG header states, read without stb: stb refuses to describe images past
// its own size limits (and then blames the format), so an oversized image could not otherwise be
// told from a file that is not an image at all. False when the header is not one of these.
bool header_size(std::span<const uint8_t> b, int64_t& w, int64_t& h) {
  auto be16 = [&](size_t i) { return static_cast<int64_t>(b[i]) << 8 | b[i + 1]; };
  auto be32 = [&](size_t i) { return be16(i) << 16 | be16(i + 2); };
  auto le32 = [&](size_t i) {
    return static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(b[i]) | static_cast<uint32_t>(b[i + 1]) << 8 |
                                                     static_cast<uint32_t>(b[i + 2]) << 16 |
                                                     static_cast<uint32_t>(b[i + 3]) << 24));
  };
  static constexpr uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.size() >= 24 && std::memcmp(b.data(), kPng, 8) == 0 && std::memcmp(b.data() + 12, "IHDR", 4) == 0) {
    w = be32(16);
    h = be32(20);
    return true;
  }
  if (b.size() >= 26 && b[0] == 'B' && b[1] == 'M') {
    w = le32(18);
    h = std::abs(le32(22));  // negative: rows stored top-down
    return true;
  }
  if (b.size() >= 4 && b[0] == 0xFF && b[1] == 0xD8) {
    // JPEG: walk the markers to the first start-of-frame (SOF0..SOF15 but DHT, JPG and DAC).
    size_t i = 2;
    while (i + 4 <= b.size()) {
      if (b[i] != 0xFF) return false;
      const uint8_t m = b[i + 1];
      if (m == 0xFF) {  // fill byte
        ++i;
        continue;
      }
      if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // markers without a length
        i += 2;
        continue;
      }
      const auto seg = static_cast<size_t>(be16(i + 2));
      if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
        if (i + 9 > b.size()) return false;
        h = be16(i + 5);
        w = be16(i + 7);
        return true;
      }
      if (seg < 2) return false;
      i += 2 + seg;
    }
  }
  return false;
}

}  // namespace

Image decode_image(std::span<const uint8_t> bytes, const std::string& what, int64_t max_pixels) {
  MF_CHECK(!bytes.empty(), "cannot decode image {}: the data is empty", what);
  // stb takes the length as an int.
  MF_CHECK(bytes.size() <= static_cast<size_t>(INT_MAX),
           "cannot decode image {}: {} bytes is more than the 2 GiB stb_image can read", what, bytes.size());
  const int len = static_cast<int>(bytes.size());

  // Read the header alone first, so that a small file claiming a huge size is refused before stb
  // allocates anything for its pixels.
  int64_t hw = 0, hh = 0;
  const bool has_size = header_size(bytes, hw, hh);
  // (Compared by division: a PNG header's 32-bit sides can multiply past int64's range.)
  if (has_size && hw > 0 && hh > 0 && hw > max_pixels / hh)
    fail("cannot decode image {}: {}x{} pixels is more than the limit of {} (see --max-image-pixels)", what, hw, hh,
         max_pixels);
  // JPEGs go to libjpeg-turbo, Pillow's decoder (io/jpeg.h), except CMYK and YCCK ones.
  if (looks_like_jpeg(bytes)) {
    Image img;
    if (decode_jpeg(bytes, what, max_pixels, img)) return img;
  }
  int w = 0, h = 0, channels = 0;
  if (!stbi_info_from_memory(bytes.data(), len, &w, &h, &channels)) {
    // stb's info reports only the last format it tried, "unknown image type", even for a PNG it
    // found too large or damaged: say what the header said instead.
    if (has_size && hw > 0 && hh > 0)
      fail("cannot decode image {}: stb_image cannot read it (damaged, or too large for it); its header says {}x{} "
           "pixels", what, hw, hh);
    fail("cannot decode image {}: {}", what, stb_reason());
  }
  MF_CHECK(w > 0 && h > 0, "cannot decode image {}: invalid size {}x{}", what, w, h);
  MF_CHECK(static_cast<int64_t>(w) * h <= max_pixels,
           "cannot decode image {}: {}x{} pixels is more than the limit of {} (see --max-image-pixels)", what, w, h,
           max_pixels);

  int dw = 0, dh = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(stbi_load_from_memory(bytes.data(), len, &dw, &dh, &channels, 3),
                                                   stbi_image_free);
  if (!pixels) fail("cannot decode image {}: {}", what, stb_reason());
  // The header and the decoder agree for every format stb reads; checked anyway because the pixel
  // count below comes from the decoder, not from the size we checked against max_pixels.
  MF_CHECK(dw == w && dh == h, "cannot decode image {}: header says {}x{} but the decoder produced {}x{}", what, w, h,
           dw, dh);

  Image img;
  img.width = w;
  img.height = h;
  img.rgb.assign(pixels.get(), pixels.get() + static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
  return img;
}

Image load_image(const std::string& path, int64_t max_pixels) {
  const std::vector<uint8_t> bytes = read_image_file(path);
  return decode_image(bytes, path, max_pixels);
}

}  // namespace mf
