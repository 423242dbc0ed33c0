#include "io/jpeg.h"

#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE
#include <cstring>

#include <jpeglib.h>
#include <jerror.h>  // the message codes (JWRN_JPEG_EOF)

#include "core/error.h"

namespace mf {

namespace {

// libjpeg reports errors through error_exit, which must not return: the standard way out is a
// longjmp back to the caller. The two functions that call libjpeg (read_header, read_pixels) keep
// only plain C data alive across it, so that no C++ destructor is skipped; they return false after
// an error and the message waits in ErrorManager.
struct ErrorManager {
  jpeg_error_mgr pub;  // first member: libjpeg hands back a pointer to it
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

// More scans than libjpeg-turbo's own TJFLAG_LIMITSCANS allows mark a progressive file made to
// take minutes to decode (libjpeg-turbo's "Mitigating denial-of-service attacks" advice); real
// encoders write about ten.
constexpr int kMaxScans = 500;

struct Progress {
  jpeg_progress_mgr pub;
  ErrorManager* err;
};

extern "C" void on_error(j_common_ptr c) {
  auto* e = reinterpret_cast<ErrorManager*>(c->err);
  (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}

// Warnings (level -1) let libjpeg go on with damaged data, as Pillow lets it, except the one that
// says the data ended early: libjpeg would pad the image with grey, Pillow refuses the file
// ("image file is truncated"), and so do we.
extern "C" void on_message(j_common_ptr c, int level) {
  if (level == -1 && c->err->msg_code == JWRN_JPEG_EOF) {
    auto* e = reinterpret_cast<ErrorManager*>(c->err);
    std::snprintf(e->message, sizeof e->message, "the file is truncated (the JPEG data ends early)");
    std::longjmp(e->jump, 1);
  }
}

extern "C" void on_progress(j_common_ptr c) {
  auto* d = reinterpret_cast<j_decompress_ptr>(c);
  if (d->input_scan_number > kMaxScans) {
    auto* e = reinterpret_cast<Progress*>(c->progress)->err;
    std::snprintf(e->message, sizeof e->message, "more than %d progressive scans", kMaxScans);
    std::longjmp(e->jump, 1);
  }
}

struct Decoder {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  Progress progress;
  bool created = false;
};

bool read_header(Decoder& d, const uint8_t* data, unsigned long size) {
  if (setjmp(d.err.jump)) return false;
  jpeg_create_decompress(&d.cinfo);
  d.created = true;
  d.cinfo.progress = &d.progress.pub;
  jpeg_mem_src(&d.cinfo, data, size);
  jpeg_read_header(&d.cinfo, TRUE);
  return true;
}

// Decodes into dst, which holds width × height RGB pixels: checked against what libjpeg will
// write before the first row (a scaled or differently coloured output would overrun it).
bool read_pixels(Decoder& d, uint8_t* dst, JDIMENSION width, JDIMENSION height) {
  if (setjmp(d.err.jump)) return false;
  jpeg_start_decompress(&d.cinfo);
  if (d.cinfo.output_width != width || d.cinfo.output_height != height || d.cinfo.output_components != 3) {
    std::snprintf(d.err.message, sizeof d.err.message, "the header says %ux%u but the decoder gives %ux%ux%d",
                  width, height, d.cinfo.output_width, d.cinfo.output_height, d.cinfo.output_components);
    return false;
  }
  const size_t row_bytes = static_cast<size_t>(width) * 3;
  while (d.cinfo.output_scanline < d.cinfo.output_height) {
    JSAMPROW rows[8];
    const JDIMENSION first = d.cinfo.output_scanline;
    const JDIMENSION n = d.cinfo.output_height - first < 8 ? d.cinfo.output_height - first : 8;
    for (JDIMENSION r = 0; r < n; ++r) rows[r] = dst + static_cast<size_t>(first + r) * row_bytes;
    jpeg_read_scanlines(&d.cinfo, rows, n);
  }
  jpeg_finish_decompress(&d.cinfo);  // reads on to the end-of-image marker: a file without it is truncated
  return true;
}

}  // namespace

bool decode_jpeg(std::span<const uint8_t> bytes, const std::string& what, int64_t max_pixels, Image& out) {
  Decoder d;
  std::memset(&d.cinfo, 0, sizeof d.cinfo);
  d.cinfo.err = jpeg_std_error(&d.err.pub);
  d.err.pub.error_exit = on_error;
  d.err.pub.emit_message = on_message;
  d.err.message[0] = '\0';
  d.progress.pub.progress_monitor = on_progress;
  d.progress.err = &d.err;
  struct Destroy {
    Decoder& d;
    ~Destroy() {
      if (d.created) jpeg_destroy_decompress(&d.cinfo);
    }
  } destroy{d};

  if (!read_header(d, bytes.data(), static_cast<unsigned long>(bytes.size())))
    fail("cannot decode image {}: {}", what, d.err.message);
  const int64_t w = d.cinfo.image_width, h = d.cinfo.image_height;
  MF_CHECK(w > 0 && h > 0, "cannot decode image {}: invalid size {}x{}", what, w, h);
  MF_CHECK(w * h <= max_pixels, "cannot decode image {}: {}x{} pixels is more than the limit of {} (see --max-image-pixels)",
           what, w, h, max_pixels);
  switch (d.cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
      break;
    default:
      return false;  // CMYK, YCCK or unknown: stb_image's conversion, as before this decoder
  }
  // Pillow's defaults: the accurate integer inverse DCT and fancy (triangular) chroma upsampling.
  d.cinfo.out_color_space = JCS_RGB;
  d.cinfo.dct_method = JDCT_ISLOW;
  d.cinfo.do_fancy_upsampling = TRUE;
  Image img;
  img.width = static_cast<int>(w);
  img.height = static_cast<int>(h);
  img.rgb.resize(static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
  if (!read_pixels(d, img.rgb.data(), d.cinfo.image_width, d.cinfo.image_height))
    fail("cannot decode image {}: {}", what, d.err.message);
  out = std::move(img);
  return true;
}

}  // namespace mf
