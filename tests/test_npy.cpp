// .npy: round trips, byte-for-byte parity with numpy's writer, the dtypes and versions numpy writes,
// and one test per kind of malformed file, each checking the one-line message.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/npy.h"
#include "test_util.h"

namespace mf::test {
namespace {

std::vector<uint8_t> npy_with(const std::string& header, size_t data_bytes, uint8_t major = 1) {
  std::vector<uint8_t> b{0x93, 'N', 'U', 'M', 'P', 'Y', major, 0};
  const size_t n = header.size();
  b.push_back(static_cast<uint8_t>(n & 0xFF));
  b.push_back(static_cast<uint8_t>(n >> 8));
  if (major > 1) {
    b.push_back(static_cast<uint8_t>(n >> 16));
    b.push_back(static_cast<uint8_t>(n >> 24));
  }
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes, 0);
  return b;
}

std::string dict(const std::string& descr, const std::string& shape, const std::string& order = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + order + ", 'shape': " + shape + ", }";
}

// Succeeds when parse_npy throws an mf::Error whose one-line message starts with the file name and
// contains `phrase`.
testing::AssertionResult rejects(const std::vector<uint8_t>& bytes, const std::string& phrase) {
  try {
    parse_npy(bytes, "x.npy");
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.find('\n') != std::string::npos) return testing::AssertionFailure() << "multi-line message: " << msg;
    if (msg.rfind("x.npy: ", 0) != 0) return testing::AssertionFailure() << "message lacks the file name: " << msg;
    if (msg.find(phrase) == std::string::npos)
      return testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << phrase << "\"";
    return testing::AssertionSuccess();
  }
  return testing::AssertionFailure() << "no mf::Error thrown (expected \"" << phrase << "\")";
}

TEST(Npy, RoundTrip) {
  TempDir dir;
  for (const Shape& s : {Shape{2, 3, 5, 7}, Shape{5}, Shape{}, Shape{0, 3}, Shape{1, 2, 1, 2, 1, 3}}) {
    Tensor t = random_tensor(s, 3);
    write_npy(dir.file("t.npy"), t);
    Tensor back = read_npy(dir.file("t.npy"));
    EXPECT_EQ(back.shape(), s);
    EXPECT_EQ(max_abs_diff(back, t), 0.0);
    // Like numpy: version 1.0, data at a multiple of 64 bytes, header ending in '\n'.
    const auto bytes = read_bytes(dir.file("t.npy"));
    const size_t data_start = bytes.size() - static_cast<size_t>(t.numel()) * 4;
    EXPECT_EQ(bytes[6], 1);
    EXPECT_EQ(bytes[7], 0);
    EXPECT_EQ(data_start % 64, 0u);
    EXPECT_EQ(bytes[data_start - 1], '\n');
    EXPECT_EQ(bytes[8] | (bytes[9] << 8), static_cast<int>(data_start - 10));
  }
}

TEST(Npy, SpecialValuesRoundTripBitExactly) {
  const std::vector<float> v{-0.f, INFINITY, -INFINITY, std::nanf(""), 1e-45f, 3.4028235e38f};
  Tensor back = parse_npy(encode_npy(Tensor::from({6}, v)), "mem");
  EXPECT_EQ(std::memcmp(back.data(), v.data(), v.size() * 4), 0);
}

TEST(Npy, EncodesExactlyWhatNumpyWrites) {
  // The fixtures were written by numpy.save; re-encoding what we read must give the same bytes.
  for (const char* name : {"io/f4_2x3.npy", "io/f4_scalar.npy"}) {
    const auto numpy_bytes = read_bytes(data_path(name));
    EXPECT_EQ(encode_npy(parse_npy(numpy_bytes, name)), numpy_bytes) << name;
  }
}

TEST(Npy, FilesWrittenByNumpy) {
  // tools/golden/make_io_fixtures.py writes these with numpy.
  Tensor f4 = read_npy(data_path("io/f4_2x3.npy"));
  ASSERT_EQ(f4.shape(), (Shape{2, 3}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f4.data()[i], 0.5f * static_cast<float>(i));
  Tensor f8 = read_npy(data_path("io/f8_4.npy"));
  ASSERT_EQ(f8.shape(), (Shape{4}));
  EXPECT_EQ(f8.data()[2], 2.f);
  EXPECT_EQ(f8.data()[3], -1.5f);
  Tensor f2 = read_npy(data_path("io/f2_3.npy"));
  ASSERT_EQ(f2.shape(), (Shape{6}));
  EXPECT_EQ(f2.data()[0], 1.f);
  EXPECT_EQ(f2.data()[1], -2.f);
  EXPECT_EQ(f2.data()[2], 0.25f);
  EXPECT_EQ(f2.data()[3], std::ldexp(1.f, -24));
  EXPECT_EQ(f2.data()[4], 0.f);
  EXPECT_TRUE(std::signbit(f2.data()[4]));
  EXPECT_EQ(f2.data()[5], INFINITY);
  Tensor v2 = read_npy(data_path("io/f4_v2.npy"));
  ASSERT_EQ(v2.shape(), (Shape{1, 2, 2}));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(v2.data()[i], static_cast<float>(i));
  Tensor scalar = read_npy(data_path("io/f4_scalar.npy"));
  EXPECT_EQ(scalar.shape(), Shape{});
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.data()[0], 42.f);
}

TEST(Npy, Float64AndFloat16Inputs) {
  std::vector<uint8_t> f8 = npy_with(dict("<f8", "(3,)"), 24);
  const double d[3] = {0.1, -1e300, 1e-320};
  std::memcpy(f8.data() + f8.size() - 24, d, 24);
  Tensor a = parse_npy(f8, "f8");
  EXPECT_EQ(a.data()[0], 0.1f);
  EXPECT_EQ(a.data()[1], -INFINITY);
  EXPECT_EQ(a.data()[2], 0.f);

  // Every binary16 value, against its definition (sign, 5-bit exponent, 10-bit mantissa).
  std::vector<uint8_t> f2 = npy_with(dict("<f2", "(256, 256)"), 131072);
  for (uint32_t i = 0; i < 65536; ++i) {
    f2[f2.size() - 131072 + 2 * i] = static_cast<uint8_t>(i & 0xFF);
    f2[f2.size() - 131072 + 2 * i + 1] = static_cast<uint8_t>(i >> 8);
  }
  Tensor h = parse_npy(f2, "f2");
  int bad = 0;
  for (uint32_t i = 0; i < 65536; ++i) {
    const int exp = (i >> 10) & 0x1F, mant = i & 0x3FF;
    float want = exp == 0x1F ? (mant ? NAN : INFINITY)
                 : exp == 0  ? std::ldexp(static_cast<float>(mant), -24)
                             : std::ldexp(static_cast<float>(1024 + mant), exp - 25);
    if (i >> 15) want = -want;
    const float got = h.data()[i];
    bad += std::signbit(got) != std::signbit(want) || (std::isnan(want) ? !std::isnan(got) : got != want);
  }
  EXPECT_EQ(bad, 0);
}

TEST(Npy, ScalarAndEmptyArrays) {
  std::vector<uint8_t> s = npy_with(dict("<f4", "()"), 4);
  const float v = -7.5f;
  std::memcpy(s.data() + s.size() - 4, &v, 4);
  Tensor t = parse_npy(s, "s");
  EXPECT_EQ(t.ndim(), 0);
  EXPECT_EQ(t.data()[0], -7.5f);
  EXPECT_EQ(parse_npy(npy_with(dict("<f4", "(0, 5)"), 0), "e").shape(), (Shape{0, 5}));
}

TEST(Npy, HeaderSyntaxNumpyMayWrite) {
  // Other key orders, double quotes, no trailing comma, newlines, versions 2.0 and 3.0.
  EXPECT_EQ(parse_npy(npy_with("{'shape': (2,3), 'fortran_order': False, 'descr': '<f4'}\n", 24), "a").shape(),
            (Shape{2, 3}));
  EXPECT_EQ(
      parse_npy(npy_with("{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (4,)}   \n", 16), "b").shape(),
      (Shape{4}));
  EXPECT_EQ(parse_npy(npy_with(dict("<f4", "( 1 , 2 , )"), 8), "c").shape(), (Shape{1, 2}));
  EXPECT_EQ(parse_npy(npy_with(dict("<f4", "(2,)"), 8, 2), "v2").shape(), (Shape{2}));
  EXPECT_EQ(parse_npy(npy_with(dict("<f4", "(2,)"), 8, 3), "v3").shape(), (Shape{2}));
}

TEST(Npy, MissingFile) {
  try {
    read_npy("/nonexistent/x.npy");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open /nonexistent/x.npy: No such file or directory"),
              std::string::npos);
  }
}

TEST(Npy, WriterRejectsAnUndefinedTensor) { EXPECT_THROW(encode_npy(Tensor()), Error); }

// ---------------------------------------------------------------------------------------------------
// Malformed files: one test per check

TEST(NpyMalformed, BadMagic) {
  EXPECT_TRUE(rejects({1, 2, 3}, "not a .npy file"));
  EXPECT_TRUE(rejects({}, "not a .npy file"));
  std::vector<uint8_t> b = npy_with(dict("<f4", "(2,)"), 8);
  b[1] = 'n';
  EXPECT_TRUE(rejects(b, "not a .npy file"));
}

TEST(NpyMalformed, UnsupportedVersion) {
  std::vector<uint8_t> b = npy_with(dict("<f4", "(2,)"), 8);
  b[6] = 9;
  EXPECT_TRUE(rejects(b, "unsupported .npy format version 9.0"));
  b[6] = 0;
  EXPECT_TRUE(rejects(b, "unsupported .npy format version 0.0"));
}

TEST(NpyMalformed, TruncatedBeforeTheHeaderLength) {
  EXPECT_TRUE(rejects({0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 5}, "truncated .npy header"));
  EXPECT_TRUE(rejects({0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 5, 0, 0}, "truncated .npy header"));
}

TEST(NpyMalformed, HeaderLengthPastTheEnd) {
  std::vector<uint8_t> b = npy_with(dict("<f4", "(2,)"), 8);
  b[9] = 0xFF;
  EXPECT_TRUE(rejects(b, "truncated .npy header"));
  std::vector<uint8_t> v2 = npy_with(dict("<f4", "(2,)"), 8, 2);
  v2[11] = 0xFF;
  EXPECT_TRUE(rejects(v2, "truncated .npy header"));
}

TEST(NpyMalformed, HeaderNotADict) {
  EXPECT_TRUE(rejects(npy_with("", 0), "malformed .npy header (expected '{')"));
  EXPECT_TRUE(rejects(npy_with("['descr', '<f4']", 0), "malformed .npy header (expected '{')"));
  EXPECT_TRUE(rejects(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) ", 8), "malformed .npy header"));
  EXPECT_TRUE(rejects(npy_with("{'descr' '<f4'}", 0), "expected ':'"));
  EXPECT_TRUE(rejects(npy_with("{'descr': '<f4' 'shape': (2,)}", 0), "expected ',' or '}'"));
  EXPECT_TRUE(rejects(npy_with("{descr: '<f4'}", 0), "expected a string"));
}

TEST(NpyMalformed, TrailingCharactersAfterTheDict) {
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(2,)") + " x\n", 8), "trailing characters after the dict"));
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(2,)") + "}", 8), "trailing characters"));
}

TEST(NpyMalformed, UnterminatedOrEscapedString) {
  EXPECT_TRUE(rejects(npy_with("{'descr: '<f4'}", 0), "malformed .npy header"));
  EXPECT_TRUE(rejects(npy_with("{'descr", 0), "unterminated string"));
  EXPECT_TRUE(rejects(npy_with("{'de\\'scr': '<f4'}", 0), "escape in a string"));
}

TEST(NpyMalformed, MissingKey) {
  EXPECT_TRUE(rejects(npy_with("{'descr': '<f4', 'shape': (2,), }", 8), "lacks descr, fortran_order or shape"));
  EXPECT_TRUE(rejects(npy_with("{}", 0), "lacks descr, fortran_order or shape"));
}

TEST(NpyMalformed, UnknownKey) {
  EXPECT_TRUE(
      rejects(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 8), "unexpected key 'x'"));
}

TEST(NpyMalformed, DuplicateKey) {
  EXPECT_TRUE(rejects(npy_with("{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': (2,)}", 8),
                      "duplicate key 'descr'"));
  EXPECT_TRUE(rejects(npy_with("{'shape': (2,), 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}", 8),
                      "duplicate key 'shape'"));
}

TEST(NpyMalformed, BadBoolean) {
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(2,)", "0"), 8), "expected True or False"));
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(2,)", "true"), 8), "expected True or False"));
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(2,)", "Falsey"), 8), "malformed .npy header"));
}

TEST(NpyMalformed, FortranOrder) {
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(2,)", "True"), 8), "Fortran-ordered arrays are not supported"));
}

TEST(NpyMalformed, BigEndian) {
  EXPECT_TRUE(rejects(npy_with(dict(">f4", "(2,)"), 8), "big-endian arrays are not supported"));
  EXPECT_TRUE(rejects(npy_with(dict(">f8", "(2,)"), 16), "big-endian arrays are not supported"));
}

TEST(NpyMalformed, UnsupportedDtype) {
  const std::string phrase = "is not supported (float32, float64 or float16 arrays only)";
  EXPECT_TRUE(rejects(npy_with(dict("<i8", "(2,)"), 16), "dtype '<i8' " + phrase));
  EXPECT_TRUE(rejects(npy_with(dict("|f4", "(2,)"), 8), "dtype '|f4' " + phrase));
  EXPECT_TRUE(rejects(npy_with(dict("<f16", "(2,)"), 32), phrase));
  EXPECT_TRUE(rejects(npy_with(dict("", "(2,)"), 8), phrase));
  EXPECT_TRUE(
      rejects(npy_with("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", 8), "expected a string"));
}

TEST(NpyMalformed, ShapeNotATupleOfIntegers) {
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(2, -1)"), 8), "malformed shape"));
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(2.0,)"), 8), "malformed shape"));
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "[2]"), 8), "expected '('"));
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(2"), 8), "malformed shape"));
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(,)"), 8), "malformed shape"));
}

TEST(NpyMalformed, TooManyDimensions) {
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(1, 1, 1, 1, 1, 1, 1)"), 4), "more than 6 dimensions"));
}

TEST(NpyMalformed, ImpossiblyLargeShape) {
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(99999999999999999999999,)"), 8), "dimension too large"));
  // Each dimension is fine, their product is not (and would wrap in 64 bits).
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(4294967296, 4294967296)"), 8), "impossibly large"));
}

TEST(NpyMalformed, DataTooShort) {
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(2,)"), 4), "data is 4 bytes but shape [2] of <f4 needs 8"));
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "()"), 0), "data is 0 bytes but shape [] of <f4 needs 4"));
}

TEST(NpyMalformed, DataTooLong) {
  EXPECT_TRUE(rejects(npy_with(dict("<f4", "(2,)"), 12), "data is 12 bytes but shape [2] of <f4 needs 8"));
  EXPECT_TRUE(rejects(npy_with(dict("<f2", "(0,)"), 1), "needs 0"));
}

}  // namespace
}  // namespace mf::test
