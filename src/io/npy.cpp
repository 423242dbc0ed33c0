#include "io/npy.h"

#include <bit>
#include <cstring>
#include <string_view>

#include "core/error.h"
#include "io/file.h"

namespace mf {

// .npy data is read and written byte for byte as '<' (little-endian) values.
static_assert(std::endian::native == std::endian::little, "the .npy reader assumes a little-endian host");

namespace {

constexpr uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr uint64_t kMaxElements = uint64_t{1} << 48;  // per dimension and in all; keeps numel * 8 in range

// The header is the repr() of a Python dict, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// followed by space padding and '\n'. This parser accepts exactly that grammar (string keys; string,
// bool or tuple-of-int values; optional trailing commas; whitespace between tokens) and nothing else:
// evaluating anything more general would be unsafe, and numpy never writes more.
class HeaderParser {
 public:
  HeaderParser(std::string_view s, const std::string& what) : s_(s), what_(what) {}

  void parse(std::string& descr, bool& fortran, std::vector<int64_t>& shape) {
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (true) {
      skip();
      if (peek() == '}') break;
      const std::string key = string();
      expect(':');
      if (key == "descr") {
        MF_CHECK(!have_descr, "{}: malformed .npy header (duplicate key 'descr')", what_);
        descr = string();
        have_descr = true;
      } else if (key == "fortran_order") {
        MF_CHECK(!have_order, "{}: malformed .npy header (duplicate key 'fortran_order')", what_);
        fortran = boolean();
        have_order = true;
      } else if (key == "shape") {
        MF_CHECK(!have_shape, "{}: malformed .npy header (duplicate key 'shape')", what_);
        shape = tuple();
        have_shape = true;
      } else {
        fail("{}: malformed .npy header (unexpected key '{}')", what_, key);
      }
      skip();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      MF_CHECK(peek() == '}', "{}: malformed .npy header (expected ',' or '}}')", what_);
      break;
    }
    ++i_;  // the '}'
    MF_CHECK(have_descr && have_order && have_shape, "{}: .npy header lacks descr, fortran_order or shape", what_);
    skip();
    MF_CHECK(i_ == s_.size(), "{}: malformed .npy header (trailing characters after the dict)", what_);
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  static bool is_digit(char c) { return c >= '0' && c <= '9'; }
  void skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    skip();
    MF_CHECK(peek() == c, "{}: malformed .npy header (expected '{}')", what_, c);
    ++i_;
  }
  std::string string() {
    skip();
    const char quote = peek();
    MF_CHECK(quote == '\'' || quote == '"', "{}: malformed .npy header (expected a string)", what_);
    const size_t end = s_.find(quote, i_ + 1);
    MF_CHECK(end != std::string_view::npos, "{}: malformed .npy header (unterminated string)", what_);
    std::string out(s_.substr(i_ + 1, end - i_ - 1));
    MF_CHECK(out.find('\\') == std::string::npos, "{}: malformed .npy header (escape in a string)", what_);
    i_ = end + 1;
    return out;
  }
  bool word(std::string_view w) {
    if (s_.substr(i_).starts_with(w)) {
      i_ += w.size();
      return true;
    }
    return false;
  }
  bool boolean() {
    skip();
    if (word("True")) return true;
    if (word("False")) return false;
    fail("{}: malformed .npy header (expected True or False)", what_);
  }
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> dims;
    while (true) {
      skip();
      if (peek() == ')') break;
      MF_CHECK(is_digit(peek()), "{}: malformed shape in the .npy header", what_);
      uint64_t v = 0;
      while (is_digit(peek())) {
        v = v * 10 + static_cast<uint64_t>(s_[i_++] - '0');
        MF_CHECK(v <= kMaxElements, "{}: dimension too large in the .npy header", what_);
      }
      MF_CHECK(dims.size() < static_cast<size_t>(Shape::kMaxDims), "{}: the array has more than {} dimensions", what_,
               Shape::kMaxDims);
      dims.push_back(static_cast<int64_t>(v));
      skip();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      MF_CHECK(peek() == ')', "{}: malformed shape in the .npy header", what_);
    }
    ++i_;  // the ')'
    return dims;
  }

  std::string_view s_;
  const std::string& what_;
  size_t i_ = 0;
};

// IEEE 754 binary16 -> binary32, exactly (every half is a float): rebias the exponent, and turn
// subnormals into normal floats by shifting the leading 1 into the implicit-bit position.
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf, or nan with its payload
  } else if (exp != 0) {
    bits = sign | ((exp + 127u - 15u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    uint32_t e = 127u - 15u + 1u;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

}  // namespace

Tensor parse_npy(std::span<const uint8_t> b, const std::string& what) {
  MF_CHECK(b.size() >= 8 && std::memcmp(b.data(), kMagic, 6) == 0, "{}: not a .npy file", what);
  const uint8_t major = b[6];
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    MF_CHECK(b.size() >= 10, "{}: truncated .npy header", what);
    header_len = static_cast<size_t>(b[8]) | (static_cast<size_t>(b[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {  // 3.0 differs from 2.0 only in allowing UTF-8 in the header
    MF_CHECK(b.size() >= 12, "{}: truncated .npy header", what);
    header_len = static_cast<size_t>(b[8]) | (static_cast<size_t>(b[9]) << 8) | (static_cast<size_t>(b[10]) << 16) |
                 (static_cast<size_t>(b[11]) << 24);
    header_start = 12;
  } else {
    fail("{}: unsupported .npy format version {}.{}", what, major, b[7]);
  }
  MF_CHECK(header_len <= b.size() - header_start, "{}: truncated .npy header ({} bytes claimed, {} present)", what,
           header_len, b.size() - header_start);
  const std::string_view header(reinterpret_cast<const char*>(b.data() + header_start), header_len);
  std::string descr;
  bool fortran = false;
  std::vector<int64_t> dims;
  HeaderParser(header, what).parse(descr, fortran, dims);

  MF_CHECK(descr.empty() || descr[0] != '>', "{}: big-endian arrays are not supported (dtype '{}')", what, descr);
  size_t itemsize = 0;
  // '<' is what numpy writes for multi-byte types; '=' (native) means the same on our hosts.
  if (descr == "<f4" || descr == "=f4") {
    itemsize = 4;
  } else if (descr == "<f8" || descr == "=f8") {
    itemsize = 8;
  } else if (descr == "<f2" || descr == "=f2") {
    itemsize = 2;
  } else {
    fail("{}: dtype '{}' is not supported (float32, float64 or float16 arrays only)", what, descr);
  }
  MF_CHECK(!fortran, "{}: Fortran-ordered arrays are not supported (save with numpy.ascontiguousarray)", what);

  uint64_t numel = 1;
  for (int64_t d : dims) {
    const auto u = static_cast<uint64_t>(d);
    MF_CHECK(u == 0 || numel <= kMaxElements / u, "{}: array impossibly large", what);
    numel *= u;
  }
  const Shape shape{std::span<const int64_t>(dims)};
  const size_t data_start = header_start + header_len;
  const uint64_t have = b.size() - data_start;
  MF_CHECK(have == numel * itemsize, "{}: data is {} bytes but shape {} of {} needs {}", what, have, shape.str(), descr,
           numel * itemsize);

  Tensor t = Tensor::empty(shape);
  const uint8_t* src = b.data() + data_start;
  float* dst = t.data();
  const auto n = static_cast<size_t>(numel);
  if (itemsize == 4) {
    if (n) std::memcpy(dst, src, n * 4);
  } else if (itemsize == 8) {
    for (size_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, src + 8 * i, 8);
      dst[i] = static_cast<float>(d);  // nearest float; out-of-range values become infinities
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = half_to_float(h);
    }
  }
  return t;
}

Tensor read_npy(const std::string& path) {
  auto f = MappedFile::open(path);
  return parse_npy(f->bytes(), path);
}

std::vector<uint8_t> encode_npy(const Tensor& t) {
  MF_CHECK(t.defined(), "cannot write an undefined tensor as .npy");
  // Python's tuple syntax: "()", "(5,)", "(2, 3)".
  std::string shape = "(";
  for (int i = 0; i < t.ndim(); ++i) shape += (i ? ", " : "") + std::to_string(t.dim(i));
  shape += t.ndim() == 1 ? ",)" : ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  // Byte for byte what numpy (>= 1.23) writes. It leaves room for the first dimension to grow to 21
  // digits, so that an appending writer can rewrite the header in place...
  if (t.ndim() > 0) header.append(21 - std::to_string(t.dim(0)).size(), ' ');
  // ...then pads with spaces so that the data starts at a multiple of 64 bytes (magic, version,
  // 2-byte length, header, '\n'), which lets readers map the array in place. Like numpy, it always
  // adds at least one space.
  const size_t unpadded = 10 + header.size() + 1;
  header.append(64 - unpadded % 64, ' ');
  header += '\n';
  MF_ASSERT(header.size() <= 0xFFFF);  // at most 6 dimensions keep it far below version 1.0's limit
  std::vector<uint8_t> out(kMagic, kMagic + 6);
  out.push_back(1);  // version 1.0
  out.push_back(0);
  out.push_back(static_cast<uint8_t>(header.size() & 0xFF));
  out.push_back(static_cast<uint8_t>(header.size() >> 8));
  out.insert(out.end(), header.begin(), header.end());
  const size_t bytes = static_cast<size_t>(t.numel()) * 4;
  const size_t at = out.size();
  out.resize(at + bytes);
  if (bytes) std::memcpy(out.data() + at, t.data(), bytes);
  return out;
}

void write_npy(const std::string& path, const Tensor& t) { write_file_atomic(path, encode_npy(t)); }

}  // namespace mf
