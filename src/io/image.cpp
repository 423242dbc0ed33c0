#include "io/image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>

// Debian's libstb-dev builds the implementation into libstb.so, so STB_IMAGE_IMPLEMENTATION must
// not be defined here.
#include <stb/stb_image.h>

#include "core/error.h"

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

}  // namespace

Image decode_image(std::span<const uint8_t> bytes, const std::string& what, int64_t max_pixels) {
  MF_CHECK(!bytes.empty(), "cannot decode image {}: the data is empty", what);
  // stb takes the length as an int.
  MF_CHECK(bytes.size() <= static_cast<size_t>(INT_MAX),
           "cannot decode image {}: {} bytes is more than the 2 GiB stb_image can read", what, bytes.size());
  const int len = static_cast<int>(bytes.size());

  // Read the header alone first, so that a small file claiming a huge size is refused before stb
  // allocates anything for its pixels.
  int w = 0, h = 0, channels = 0;
  if (!stbi_info_from_memory(bytes.data(), len, &w, &h, &channels))
    fail("cannot decode image {}: {}", what, stb_reason());
  MF_CHECK(w > 0 && h > 0, "cannot decode image {}: invalid size {}x{}", what, w, h);
  MF_CHECK(static_cast<int64_t>(w) * h <= max_pixels,
           "cannot decode image {}: {}x{} pixels is more than the limit of {}", what, w, h, max_pixels);

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

Image load_image(const std::string& path) {
  const std::vector<uint8_t> bytes = read_image_file(path);
  return decode_image(bytes, path);
}

}  // namespace mf
