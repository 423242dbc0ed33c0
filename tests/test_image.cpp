// Image decoding, Pillow-exact resizing, torchvision center crop and timm's eval transform, checked
// against references that tools/golden/make_image_fixtures.py computes with Pillow and numpy.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "io/image.h"
#include "io/resample.h"
#include "test_util.h"

namespace mf {
namespace {
using test::error_of;

std::string image_path(const std::string& name) { return test::data_path("image/" + name); }
std::vector<uint8_t> image_bytes(const std::string& name) { return test::read_bytes(image_path(name)); }

// The same 64-bit FNV-1a as the fixture script, to compare outputs too large to store.
std::string fnv1a64(const std::vector<uint8_t>& data) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (uint8_t b : data) h = (h ^ b) * 0x100000001B3ULL;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// refs.txt, split into whitespace-separated fields; lines whose first field is `kind`.
std::vector<std::vector<std::string>> refs(const std::string& kind) {
  std::ifstream in(image_path("refs.txt"));
  EXPECT_TRUE(in) << "missing " << image_path("refs.txt");
  std::vector<std::vector<std::string>> out;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string s; fields >> s;) f.push_back(s);
    if (!f.empty() && f[0] == kind) out.push_back(f);
  }
  return out;
}

const uint8_t* pixel(const Image& img, int x, int y) {
  return img.rgb.data() + (static_cast<size_t>(y) * img.width + static_cast<size_t>(x)) * 3;
}

// The resize sources of the fixture script: photo.png tiled from its top-left corner.
Image tiled(const Image& photo, int w, int h) {
  Image out;
  out.width = w;
  out.height = h;
  out.rgb.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      std::memcpy(out.rgb.data() + (static_cast<size_t>(y) * w + x) * 3,
                  pixel(photo, x % photo.width, y % photo.height), 3);
  return out;
}

// An image whose pixel (x, y) is (x, y, 7): crops can be checked by their coordinates.
Image coordinate_image(int w, int h) {
  Image img;
  img.width = w;
  img.height = h;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) img.rgb.insert(img.rgb.end(), {uint8_t(x), uint8_t(y), uint8_t(7)});
  return img;
}

// ------------------------------------------------------------------------------------------------
// Decoding

TEST(ImageDecode, PngMatchesPillow) {
  const Image img = load_image(image_path("photo.png"));
  ASSERT_EQ(img.width, 97);
  ASSERT_EQ(img.height, 71);
  ASSERT_EQ(img.rgb.size(), 97u * 71u * 3u);
  // A few pixels as Pillow reads them, then all of them through the hash.
  const struct {
    int x, y;
    uint8_t r, g, b;
  } expected[] = {
      {0, 0, 59, 87, 221}, {96, 70, 230, 191, 115}, {62, 24, 244, 208, 38}, {20, 50, 4, 0, 0}, {15, 42, 247, 255, 254}};
  for (const auto& e : expected) {
    const uint8_t* p = pixel(img, e.x, e.y);
    EXPECT_EQ(p[0], e.r) << e.x << "," << e.y;
    EXPECT_EQ(p[1], e.g) << e.x << "," << e.y;
    EXPECT_EQ(p[2], e.b) << e.x << "," << e.y;
  }
  for (const auto& r : refs("decode")) {
    const Image d = load_image(image_path(r[1]));
    EXPECT_EQ(d.width, std::stoi(r[2])) << r[1];
    EXPECT_EQ(d.height, std::stoi(r[3])) << r[1];
    EXPECT_EQ(fnv1a64(d.rgb), r[4]) << r[1] << " differs from Pillow's convert('RGB')";
  }
}

TEST(ImageDecode, GreyExpandsToRgb) {
  const Image img = load_image(image_path("grey.png"));
  ASSERT_EQ(img.width, 13);
  ASSERT_EQ(img.height, 9);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) {
      const uint8_t v = static_cast<uint8_t>((17 * x + 29 * y) % 256);
      const uint8_t* p = pixel(img, x, y);
      ASSERT_TRUE(p[0] == v && p[1] == v && p[2] == v) << x << "," << y;
    }
}

TEST(ImageDecode, RgbaDropsAlphaWithoutPremultiplying) {
  const Image img = load_image(image_path("rgba.png"));
  ASSERT_EQ(img.width, 11);
  ASSERT_EQ(img.height, 7);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) {
      const uint8_t* p = pixel(img, x, y);
      ASSERT_EQ(p[0], (20 * x) % 256) << x << "," << y;
      ASSERT_EQ(p[1], (30 * y) % 256) << x << "," << y;
      ASSERT_EQ(p[2], (7 * x + 11 * y) % 256) << x << "," << y;
    }
}

TEST(ImageDecode, PaletteExpandsToRgb) {
  const uint8_t palette[4][3] = {{255, 0, 0}, {0, 128, 255}, {30, 200, 40}, {250, 250, 250}};
  const Image img = load_image(image_path("palette.png"));
  ASSERT_EQ(img.width, 9);
  ASSERT_EQ(img.height, 5);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      ASSERT_EQ(std::memcmp(pixel(img, x, y), palette[(x + 2 * y) % 4], 3), 0) << x << "," << y;
}

// JPEGs are decoded by libjpeg-turbo with Pillow's settings (islow inverse DCT, fancy upsampling),
// so the pixels are Pillow's exactly, not merely close (stb_image's decoder differed by 0.097 levels
// on average and 3 at most on this fixture).
TEST(ImageDecode, JpegMatchesPillowExactly) {
  const Image img = decode_image(image_bytes("photo.jpg"), "photo.jpg");
  const Image ref = load_image(image_path("photo_jpg_pil.png"));  // Pillow's decode, stored losslessly
  ASSERT_EQ(img.width, 97);
  ASSERT_EQ(img.height, 71);
  ASSERT_EQ(img.rgb.size(), ref.rgb.size());
  size_t differing = 0;
  for (size_t i = 0; i < img.rgb.size(); ++i) differing += img.rgb[i] != ref.rgb[i];
  EXPECT_EQ(differing, 0u) << "of " << img.rgb.size() << " values";
}

// The progressive, 4:4:4 and grey JPEGs are checked against Pillow in PngMatchesPillow (refs.txt).

TEST(ImageDecode, CmykJpegsAreLeftToStb) {
  // libjpeg-turbo cannot turn CMYK into RGB; stb_image does. Its conversion is not Pillow's, so the
  // size and a likeness to the photo are checked (2.7 levels apart on average, with the JPEG loss).
  const Image img = load_image(image_path("cmyk.jpg"));
  const Image photo = load_image(image_path("photo.png"));
  ASSERT_EQ(img.width, 97);
  ASSERT_EQ(img.height, 71);
  double sum = 0;
  for (size_t i = 0; i < img.rgb.size(); ++i) sum += std::abs(int(img.rgb[i]) - int(photo.rgb[i]));
  EXPECT_LT(sum / static_cast<double>(img.rgb.size()), 8.0);
}

// A progressive JPEG whose last scan is repeated: libjpeg decodes every copy (with a warning about
// the progression), so thousands of them make a small file slow to decode. Past 500 scans the file
// is refused, as libjpeg-turbo advises.
TEST(ImageDecode, JpegsWithTooManyScansAreRefused) {
  const std::vector<uint8_t> prog = image_bytes("photo_progressive.jpg");
  size_t sos = prog.size() - 2;  // the last start-of-scan marker (entropy data escapes 0xFF)
  while (sos > 0 && !(prog[sos] == 0xFF && prog[sos + 1] == 0xDA)) --sos;
  ASSERT_GT(sos, 0u);
  ASSERT_EQ(prog[prog.size() - 2], 0xFF);
  ASSERT_EQ(prog[prog.size() - 1], 0xD9);
  auto with_copies = [&](int copies) {
    std::vector<uint8_t> b(prog.begin(), prog.end() - 2);
    for (int i = 0; i < copies; ++i) b.insert(b.end(), prog.begin() + static_cast<std::ptrdiff_t>(sos), prog.end() - 2);
    b.insert(b.end(), {0xFF, 0xD9});
    return b;
  };
  EXPECT_NO_THROW(decode_image(with_copies(100), "some_scans.jpg"));
  const std::string msg = error_of([&] { decode_image(with_copies(600), "many_scans.jpg"); });
  EXPECT_EQ(msg, "cannot decode image many_scans.jpg: more than 500 progressive scans");
}

TEST(ImageDecode, EmptyData) {
  const std::string msg = error_of([] { decode_image({}, "nothing.png"); });
  EXPECT_NE(msg.find("cannot decode image nothing.png: the data is empty"), std::string::npos) << msg;
}

TEST(ImageDecode, CorruptData) {
  const std::vector<uint8_t> garbage = {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!', 0, 1, 2, 3};
  const std::string msg = error_of([&] { decode_image(garbage, "garbage.bin"); });
  EXPECT_NE(msg.find("cannot decode image garbage.bin: unknown image format"), std::string::npos) << msg;

  // A valid PNG signature followed by nonsense.
  std::vector<uint8_t> png = image_bytes("photo.png");
  for (size_t i = 8; i < png.size(); ++i) png[i] = static_cast<uint8_t>(i * 13);
  const std::string png_msg = error_of([&] { decode_image(png, "bad.png"); });
  EXPECT_NE(png_msg.find("cannot decode image bad.png: "), std::string::npos) << png_msg;
}

// stb refuses truncated files: a JPEG must keep everything up to its EOI marker ("expected
// marker" otherwise), a PNG its image data and the IEND chunk's type. stb does not check CRCs, so a
// PNG cut inside IEND's CRC still decodes (Pillow is more lenient still: it decodes a PNG whose IEND
// chunk is missing entirely, but refuses truncated JPEGs unless LOAD_TRUNCATED_IMAGES is set).
TEST(ImageDecode, TruncatedFilesAreErrors) {
  for (const std::string name : {"photo.png", "photo.jpg"}) {
    const std::vector<uint8_t> full = image_bytes(name);
    const size_t needed = name == "photo.png" ? full.size() - 4 : full.size();
    for (size_t keep = 1; keep < needed; keep = keep < 64 || keep + 53 >= needed ? keep + 1 : keep + 53) {
      const std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(keep));
      const std::string msg = error_of([&] { decode_image(cut, "cut"); });
      ASSERT_EQ(msg.rfind("cannot decode image cut: ", 0), 0u) << name << " cut to " << keep << " bytes: " << msg;
    }
  }
  const std::vector<uint8_t> png = image_bytes("photo.png");
  const Image no_crc = decode_image(std::span(png).first(png.size() - 4), "no_crc");
  EXPECT_EQ(no_crc.rgb, decode_image(png, "full").rgb);
}

// A PNG signature and IHDR chunk (CRC not checked by stb) for an RGB image of the given size.
std::vector<uint8_t> png_header(uint32_t w, uint32_t h) {
  std::vector<uint8_t> b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  for (uint32_t v : {w, h})
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
  b.insert(b.end(), {8, 2, 0, 0, 0, 0, 0, 0, 0});  // 8 bits, RGB, deflate, no filter, no interlace, CRC
  return b;
}

TEST(ImageDecode, TooLargeIsRefusedBeforeDecoding) {
  const std::string msg = error_of([] { decode_image(image_bytes("photo.png"), "photo.png", 97 * 71 - 1); });
  EXPECT_NE(msg.find("cannot decode image photo.png: 97x71 pixels is more than the limit of 6886"), std::string::npos)
      << msg;
  EXPECT_NO_THROW(decode_image(image_bytes("photo.png"), "photo.png", 97 * 71));

  // A 33-byte file claiming 17000 x 16000 pixels (816 MB of RGB, within stb's own limits): refused
  // by the default limit from the header alone, without allocating the pixels.
  const std::string bomb = error_of([] { decode_image(png_header(17000, 16000), "bomb.png"); });
  EXPECT_NE(bomb.find("cannot decode image bomb.png: 17000x16000 pixels is more than the limit of 268435456"),
            std::string::npos)
      << bomb;
  // Sides whose product overflows 64 bits (found by fuzz_image): the same message, no overflow.
  const std::string huge = error_of([] { decode_image(png_header(3229116299u, 3952868888u), "huge.png"); });
  EXPECT_NE(huge.find("cannot decode image huge.png: 3229116299x3952868888 pixels is more than the limit"),
            std::string::npos)
      << huge;
  // Under the limit the header passes and the missing data is what fails.
  const std::string small = error_of([] { decode_image(png_header(100, 100), "short.png"); });
  EXPECT_EQ(small.rfind("cannot decode image short.png: ", 0), 0u) << small;
  EXPECT_EQ(small.find("limit"), std::string::npos) << small;
}

TEST(ImageDecode, MissingFile) {
  test::TempDir dir;
  const std::string path = dir.file("absent.jpg");
  const std::string msg = error_of([&] { load_image(path); });
  EXPECT_EQ(msg, "cannot open image " + path + ": No such file or directory");
  const std::string dir_msg = error_of([&] { load_image(dir.path()); });
  EXPECT_EQ(dir_msg, "cannot open image " + dir.path() + ": not a regular file");
  test::write_bytes(dir.file("empty.png"), {});
  const std::string empty_msg = error_of([&] { load_image(dir.file("empty.png")); });
  EXPECT_EQ(empty_msg, "cannot decode image " + dir.file("empty.png") + ": the data is empty");
}

// ------------------------------------------------------------------------------------------------
// Resizing

TEST(Resize, ParseInterpolation) {
  EXPECT_EQ(parse_interpolation("nearest"), Interpolation::Nearest);
  EXPECT_EQ(parse_interpolation("bilinear"), Interpolation::Bilinear);
  EXPECT_EQ(parse_interpolation("bicubic"), Interpolation::Bicubic);
  const std::string msg = error_of([] { parse_interpolation("lanczos"); });
  EXPECT_EQ(msg, "unknown interpolation 'lanczos' (expected nearest, bilinear or bicubic)");
}

// Every case of refs.txt: exact bytes where the script stored them, the hash of the bytes otherwise.
TEST(Resize, MatchesPillowExactly) {
  const Image photo = load_image(image_path("photo.png"));
  const auto cases = refs("resize");
  ASSERT_EQ(cases.size(), 29u);
  for (const auto& r : cases) {
    const int sw = std::stoi(r[1]), sh = std::stoi(r[2]), dw = std::stoi(r[3]), dh = std::stoi(r[4]);
    const std::string name = r[1] + "x" + r[2] + "_" + r[3] + "x" + r[4] + "_" + r[5];
    SCOPED_TRACE(name);
    const Image out = resize(tiled(photo, sw, sh), dw, dh, parse_interpolation(r[5]));
    ASSERT_EQ(out.width, dw);
    ASSERT_EQ(out.height, dh);
    ASSERT_EQ(out.rgb.size(), static_cast<size_t>(dw) * dh * 3);
    const std::string bin = image_path("resize_" + name + ".bin");
    if (std::filesystem::exists(bin)) {
      const std::vector<uint8_t> ref = test::read_bytes(bin);
      ASSERT_EQ(ref.size(), out.rgb.size());
      for (size_t i = 0; i < ref.size(); ++i)
        ASSERT_EQ(int(out.rgb[i]), int(ref[i]))
            << "first difference at x=" << (i / 3) % dw << " y=" << i / 3 / dw << " channel " << i % 3;
    }
    EXPECT_EQ(fnv1a64(out.rgb), r[6]);
  }
}

// Pillow's nearest accumulates the source position by repeated addition: at column 42 of
// 348 -> 1479, (42 + 0.5) * 348 / 1479 is 10 in exact arithmetic and in a direct product, but the
// accumulated sum lands below 10 and Pillow reads column 9.
TEST(Resize, NearestFollowsPillowsAccumulatedPosition) {
  Image wide;  // pixel x holds (x & 255, x >> 8, 0)
  wide.width = 348;
  wide.height = 1;
  for (int x = 0; x < 348; ++x) wide.rgb.insert(wide.rgb.end(), {uint8_t(x & 255), uint8_t(x >> 8), 0});
  const Image out = resize(wide, 1479, 1, Interpolation::Nearest);
  EXPECT_EQ(pixel(out, 42, 0)[0], 9);
  EXPECT_EQ(pixel(out, 41, 0)[0], 9);
  EXPECT_EQ(pixel(out, 43, 0)[0], 10);
}

TEST(Resize, SameSizeIsACopy) {
  const Image img = load_image(image_path("photo.png"));
  for (auto interp : {Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic})
    EXPECT_EQ(resize(img, img.width, img.height, interp).rgb, img.rgb);
}

// A scale-1 pass would be the identity anyway, so skipping it is not a shortcut that changes values:
// a one-axis resize equals Pillow's (covered by MatchesPillowExactly), and a constant image stays
// constant through both passes whatever the sizes (the weights are normalised to sum 1).
TEST(Resize, ConstantImageStaysConstant) {
  Image img;
  img.width = 31;
  img.height = 17;
  for (int i = 0; i < img.width * img.height; ++i) img.rgb.insert(img.rgb.end(), {0, 255, 77});
  for (auto interp : {Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic})
    for (auto [w, h] : {std::pair{5, 40}, {300, 2}, {1, 1}, {31, 3}}) {
      const Image out = resize(img, w, h, interp);
      for (int i = 0; i < w * h; ++i)
        ASSERT_TRUE(out.rgb[3 * i] == 0 && out.rgb[3 * i + 1] == 255 && out.rgb[3 * i + 2] == 77);
    }
}

// resize_region reads the box in place; it must give what resizing a copy of the box gives (whose
// resize is Pillow's, MatchesPillowExactly), for every filter, growing, shrinking and keeping sizes.
TEST(Resize, RegionIsTheResizeOfTheCrop) {
  const Image photo = load_image(image_path("photo.png"));
  const struct {
    int x0, y0, w, h, out_w, out_h;
  } cases[] = {{0, 0, 97, 71, 16, 16},  {10, 5, 40, 30, 224, 224}, {50, 20, 47, 51, 13, 29}, {3, 7, 1, 1, 5, 3},
               {96, 70, 1, 1, 2, 2},    {20, 10, 33, 44, 33, 12},  {20, 10, 33, 44, 9, 44}, {5, 5, 60, 60, 60, 60},
               {0, 30, 97, 41, 224, 96}};
  for (const auto& c : cases) {
    Image crop;
    crop.width = c.w;
    crop.height = c.h;
    for (int y = 0; y < c.h; ++y)
      for (int x = 0; x < c.w; ++x) crop.rgb.insert(crop.rgb.end(), pixel(photo, c.x0 + x, c.y0 + y), pixel(photo, c.x0 + x, c.y0 + y) + 3);
    for (auto interp : {Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic})
      ASSERT_EQ(resize_region(photo, c.x0, c.y0, c.w, c.h, c.out_w, c.out_h, interp).rgb,
                resize(crop, c.out_w, c.out_h, interp).rgb)
          << c.w << "x" << c.h << " at " << c.x0 << "," << c.y0 << " -> " << c.out_w << "x" << c.out_h;
  }
  EXPECT_EQ(error_of([&] { resize_region(photo, 90, 0, 8, 10, 4, 4, Interpolation::Bicubic); }),
            "resize_region: the box 8x10 at (90, 0) is not inside the 97x71 image");
}

TEST(Resize, InvalidArguments) {
  const Image img = coordinate_image(4, 3);
  EXPECT_EQ(error_of([&] { resize(img, 0, 3, Interpolation::Bicubic); }), "resize: invalid output size 0x3");
  EXPECT_EQ(error_of([&] { resize(img, 3, -1, Interpolation::Bicubic); }), "resize: invalid output size 3x-1");
  EXPECT_EQ(error_of([&] { resize(img, 1 << 20, 1 << 20, Interpolation::Nearest); }),
            "resize: output size 1048576x1048576 is more than 268435456 pixels");
  EXPECT_EQ(error_of([] { resize(Image{}, 3, 3, Interpolation::Bicubic); }), "resize: empty image (0x0)");
  Image bad = img;
  bad.rgb.pop_back();
  EXPECT_EQ(error_of([&] { resize(bad, 3, 3, Interpolation::Bicubic); }),
            "resize: image of 4x3 pixels holds 35 bytes instead of 36");
}

// ------------------------------------------------------------------------------------------------
// Center crop

// Checks that `out` is the crop of `img` whose top-left corner is at (left, top) of the original
// image, with zeros where that falls outside it (torchvision's padding).
void expect_crop(const Image& img, const Image& out, int left, int top) {
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x) {
      const int sx = x + left, sy = y + top;
      const bool inside = sx >= 0 && sy >= 0 && sx < img.width && sy < img.height;
      const uint8_t zero[3] = {0, 0, 0};
      const uint8_t* want = inside ? pixel(img, sx, sy) : zero;
      ASSERT_EQ(std::memcmp(pixel(out, x, y), want, 3), 0) << "at " << x << "," << y;
    }
}

TEST(CenterCrop, OffsetsRoundHalfToEven) {
  const struct {
    int w, h, cw, ch, left, top;
  } cases[] = {
      {7, 5, 4, 2, 2, 2},                          // round(1.5) = 2 both ways
      {8, 8, 3, 3, 2, 2},                          // round(2.5) = 2: half to even, not up
      {9, 12, 4, 5, 2, 4},                         // round(2.5) = 2, round(3.5) = 4
      {10, 10, 10, 10, 0, 0}, {6, 4, 5, 1, 0, 2},  // round(0.5) = 0, round(1.5) = 2
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(testing::Message() << c.w << "x" << c.h << " -> " << c.cw << "x" << c.ch);
    const Image img = coordinate_image(c.w, c.h);
    const Image out = center_crop(img, c.cw, c.ch);
    ASSERT_EQ(out.width, c.cw);
    ASSERT_EQ(out.height, c.ch);
    expect_crop(img, out, c.left, c.top);
  }
}

TEST(CenterCrop, PadsWithZerosWhenLarger) {
  const struct {
    int w, h, cw, ch, left, top;
  } cases[] = {
      {3, 2, 6, 5, -1, -1},  // pad left (6-3)//2 = 1, right 2, top (5-2)//2 = 1, bottom 2
      {3, 3, 4, 4, 0, 0},    // pad right and bottom only: (4-3)//2 = 0, (4-3+1)//2 = 1
      {10, 2, 4, 5, 3, -1},  // crop in x (round(3) = 3), pad in y only
      {2, 9, 7, 4, -2, 2},   // pad in x only (2 left, 3 right), crop in y at round(2.5) = 2
      {1, 1, 2, 2, 0, 0},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(testing::Message() << c.w << "x" << c.h << " -> " << c.cw << "x" << c.ch);
    const Image img = coordinate_image(c.w, c.h);
    const Image out = center_crop(img, c.cw, c.ch);
    ASSERT_EQ(out.width, c.cw);
    ASSERT_EQ(out.height, c.ch);
    expect_crop(img, out, c.left, c.top);
  }
}

TEST(CenterCrop, InvalidArguments) {
  EXPECT_EQ(error_of([] { center_crop(coordinate_image(4, 4), 0, 2); }), "center_crop: invalid output size 0x2");
}

// ------------------------------------------------------------------------------------------------
// timm eval transform

TEST(EvalTransform, MatchesTimmAndTorchvision) {
  const Image photo = load_image(image_path("photo.png"));
  const auto cases = refs("eval");
  ASSERT_EQ(cases.size(), 4u);
  for (const auto& r : cases) {
    SCOPED_TRACE(r[1]);
    EvalTransform t;
    t.size = std::stoi(r[2]);
    t.crop_pct = std::stod(r[3]);
    t.interpolation = parse_interpolation(r[4]);
    t.crop_mode = r[5];
    // torch.tensor(mean) rounds each Python float to float32, as strtof does here.
    for (int c = 0; c < 3; ++c) {
      t.mean[static_cast<size_t>(c)] = std::stof(r[static_cast<size_t>(6 + c)]);
      t.std[static_cast<size_t>(c)] = std::stof(r[static_cast<size_t>(9 + c)]);
    }
    const Tensor out = eval_transform(photo, t);
    ASSERT_EQ(out.shape(), Shape({t.size, t.size, 3}));
    const std::vector<uint8_t> raw = test::read_bytes(image_path("eval_" + r[1] + ".f32"));
    ASSERT_EQ(raw.size(), static_cast<size_t>(out.numel()) * sizeof(float));
    int exact = 0;
    for (int64_t i = 0; i < out.numel(); ++i) {
      float want;
      std::memcpy(&want, raw.data() + i * 4, 4);
      ASSERT_NEAR(out.data()[i], want, 1e-6)
          << "at index " << i << " (y=" << i / 3 / t.size << " x=" << (i / 3) % t.size << " c=" << i % 3 << ")";
      exact += out.data()[i] == want;
    }
    // Same float32 operations in the same order: every value is expected to be bit-identical.
    EXPECT_EQ(exact, out.numel());
  }
}

TEST(EvalTransform, DefaultsAreImagenetBicubicCenter) {
  const Image photo = load_image(image_path("photo.png"));
  const Tensor out = eval_transform(photo, EvalTransform{});
  EXPECT_EQ(out.shape(), Shape({224, 224, 3}));
  // photo is 97x71, so 224 / 1.0 = 224 -> 306x224, center crop 224x224 at x = 41.
  const Image expect = center_crop(resize(photo, 306, 224, Interpolation::Bicubic), 224, 224);
  const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
  for (size_t i = 0; i < expect.rgb.size(); ++i)
    ASSERT_EQ(out.data()[i], (float(expect.rgb[i]) / 255.f - mean[i % 3]) / std[i % 3]) << i;
}

TEST(EvalTransform, PortraitResizesWidthToScale) {
  const Image img = coordinate_image(30, 50);
  EvalTransform t;
  t.size = 20;
  t.crop_pct = 0.875;  // scale floor(22.857) = 22 -> 22 x int(22 * 50 / 30) = 22x36
  t.interpolation = Interpolation::Nearest;
  t.mean = {0, 0, 0};
  t.std = {1, 1, 1};
  const Tensor out = eval_transform(img, t);
  const Image expect = center_crop(resize(img, 22, 36, Interpolation::Nearest), 20, 20);
  for (size_t i = 0; i < expect.rgb.size(); ++i) ASSERT_EQ(out.data()[i], float(expect.rgb[i]) / 255.f) << i;
}

TEST(EvalTransform, InvalidArguments) {
  const Image img = coordinate_image(8, 8);
  EvalTransform t;
  t.size = 4;
  t.crop_mode = "border";
  EXPECT_EQ(error_of([&] { eval_transform(img, t); }),
            "eval_transform: unknown crop_mode 'border' (expected center or squash)");
  t.crop_mode = "center";
  t.crop_pct = 0;
  EXPECT_EQ(error_of([&] { eval_transform(img, t); }), "eval_transform: invalid crop_pct 0");
  t.crop_pct = 1;
  t.std[1] = 0;
  EXPECT_EQ(error_of([&] { eval_transform(img, t); }), "eval_transform: invalid std 0 for channel 1");
  t.std[1] = 1;
  t.size = 0;
  EXPECT_EQ(error_of([&] { eval_transform(img, t); }), "eval_transform: invalid size 0");
}


// ------------------------------------------------------------------------------------------------
// The image folder's training transform

// A 24-bit BMP (bottom-up rows of B, G, R padded to 4 bytes), which stb_image reads.
std::vector<uint8_t> bmp_bytes(const Image& img) {
  const uint32_t row = (static_cast<uint32_t>(img.width) * 3 + 3) & ~3u, size = 54 + row * static_cast<uint32_t>(img.height);
  std::vector<uint8_t> b(size, 0);
  auto le32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
  };
  b[0] = 'B';
  b[1] = 'M';
  le32(2, size);
  le32(10, 54);
  le32(14, 40);
  le32(18, static_cast<uint32_t>(img.width));
  le32(22, static_cast<uint32_t>(img.height));
  b[26] = 1;   // planes
  b[28] = 24;  // bits per pixel
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      for (int c = 0; c < 3; ++c)
        b[54 + static_cast<size_t>(img.height - 1 - y) * row + static_cast<size_t>(x) * 3 + static_cast<size_t>(2 - c)] =
            pixel(img, x, y)[c];
  return b;
}

// With scale [1, 1] a square image's RandomResizedCrop box is the whole image (an aspect ratio
// other than about 1 does not fit, and the fallback is the whole image), so a training sample must
// be the Pillow resize of the image, flipped or not, normalised with the same float expression as
// the eval transform, whatever the generator draws.
TEST(ImageFolderTransform, TrainingSampleIsTheResizedImageFlippedOrNotAndNormalised) {
  const Image photo = load_image(image_path("photo.png"));
  const Image square = resize_region(photo, 10, 5, 60, 60, 60, 60, Interpolation::Nearest);  // a 60x60 crop
  test::TempDir dir;
  for (const char* cls : {"a", "b"}) {
    std::filesystem::create_directories(dir.file(cls));
    test::write_bytes(dir.file(std::string(cls) + "/0.bmp"), bmp_bytes(square));
  }
  DataTransform t;
  t.size = 24;
  t.min_scale = 1.0;
  const auto data = open_image_folder(dir.path(), t);
  const Image resized = resize(square, 24, 24, Interpolation::Bicubic);
  auto expected = [&](bool flip) {
    std::vector<float> v;
    for (int y = 0; y < 24; ++y)
      for (int x = 0; x < 24; ++x)
        for (int c = 0; c < 3; ++c)
          v.push_back((float(pixel(resized, flip ? 23 - x : x, y)[c]) / 255.f - t.mean[static_cast<size_t>(c)]) /
                      t.std[static_cast<size_t>(c)]);
    return v;
  };
  const std::vector<float> plain = expected(false), flipped = expected(true);
  int flips = 0;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    Rng rng(seed);
    const Sample s = data->get(0, /*train=*/true, rng);
    ASSERT_EQ(s.image.shape(), (Shape{24, 24, 3}));
    const std::vector<float> got(s.image.data(), s.image.data() + s.image.numel());
    ASSERT_TRUE(got == plain || got == flipped) << "seed " << seed;
    flips += got == flipped;
  }
  EXPECT_GT(flips, 0);
  EXPECT_LT(flips, 12);
}

}  // namespace
}  // namespace mf
