#include "io/npy.h"

#include <cctype>
#include <cstring>
#include <optional>

#include "core/error.h"
#include "io/file.h"

namespace mf {

namespace {

// The header is a Python dict literal, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }.
// This parser accepts exactly that grammar: string keys; string, bool or tuple-of-int values.
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
        descr = string();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran = boolean();
        have_order = true;
      } else if (key == "shape") {
        shape = tuple();
        have_shape = true;
      } else {
        fail("{}: unexpected key '{}' in the .npy header", what_, key);
      }
      skip();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      skip();
      if (peek() == '}') break;
      fail("{}: malformed .npy header", what_);
    }
    ++i_;
    MF_CHECK(have_descr && have_order && have_shape, "{}: .npy header lacks descr, fortran_order or shape", what_);
    skip();
    MF_CHECK(i_ == s_.size(), "{}: trailing characters after the .npy header dict", what_);
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
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
    const char q = peek();
    MF_CHECK(q == '\'' || q == '"', "{}: malformed .npy header (expected a string)", what_);
    const size_t end = s_.find(q, i_ + 1);
    MF_CHECK(end != std::string_view::npos, "{}: malformed .npy header (unterminated string)", what_);
    std::string out(s_.substr(i_ + 1, end - i_ - 1));
    i_ = end + 1;
    return out;
  }
  bool boolean() {
    skip();
    if (s_.substr(i_, 4) == "True") {
      i_ += 4;
      return true;
    }
    if (s_.substr(i_, 5) == "False") {
      i_ += 5;
      return false;
    }
    fail("{}: malformed .npy header (expected True or False)", what_);
  }
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> dims;
    while (true) {
      skip();
      if (peek() == ')') break;
      MF_CHECK(std::isdigit(static_cast<unsigned char>(peek())), "{}: malformed shape in the .npy header", what_);
      int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        MF_CHECK(v <= (int64_t{1} << 40), "{}: dimension too large in the .npy header", what_);
        v = v * 10 + (s_[i_++] - '0');
      }
      dims.push_back(v);
      MF_CHECK(dims.size() <= static_cast<size_t>(Shape::kMaxDims), "{}: more than {} dimensions", what_,
               Shape::kMaxDims);
      skip();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      skip();
      MF_CHECK(peek() == ')', "{}: malformed shape in the .npy header", what_);
    }
    ++i_;
    return dims;
  }

  std::string_view s_;
  const std::string& what_;
  size_t i_ = 0;
};

float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) bits = sign | 0x7F800000u | (mant << 13);
  else if (exp) bits = sign | ((exp + 112u) << 23) | (mant << 13);
  else if (!mant) bits = sign;
  else {
    uint32_t e = 113;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

Tensor parse_npy(std::span<const uint8_t> b, const std::string& what) {
  static const uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  MF_CHECK(b.size() >= 10 && std::memcmp(b.data(), kMagic, 6) == 0, "{}: not a .npy file", what);
  const uint8_t major = b[6];
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<size_t>(b[8]) | (static_cast<size_t>(b[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    MF_CHECK(b.size() >= 12, "{}: truncated .npy header", what);
    header_len = static_cast<size_t>(b[8]) | (static_cast<size_t>(b[9]) << 8) | (static_cast<size_t>(b[10]) << 16) |
                 (static_cast<size_t>(b[11]) << 24);
    header_start = 12;
  } else {
    fail("{}: unsupported .npy format version {}", what, major);
  }
  MF_CHECK(header_len <= b.size() - header_start, "{}: truncated .npy header", what);
  const std::string_view header(reinterpret_cast<const char*>(b.data() + header_start), header_len);
  std::string descr;
  bool fortran = false;
  std::vector<int64_t> dims;
  HeaderParser(header, what).parse(descr, fortran, dims);
  MF_CHECK(!fortran, "{}: Fortran-ordered arrays are not supported (save with numpy.ascontiguousarray)", what);
  MF_CHECK(descr.size() >= 2, "{}: unknown dtype '{}'", what, descr);
  MF_CHECK(descr[0] != '>', "{}: big-endian arrays are not supported", what);
  MF_CHECK(descr[0] == '<' || descr[0] == '=', "{}: unsupported dtype '{}'", what, descr);
  const std::string type = descr.substr(1);
  size_t itemsize;
  if (type == "f4") itemsize = 4;
  else if (type == "f8") itemsize = 8;
  else if (type == "f2") itemsize = 2;
  else fail("{}: dtype '{}' is not supported (float32, float64 or float16 arrays only)", what, descr);

  const Shape shape{std::span<const int64_t>(dims)};
  uint64_t numel = 1;
  for (int64_t d : dims) {
    MF_CHECK(d == 0 || numel <= (uint64_t{1} << 40) / static_cast<uint64_t>(d), "{}: array impossibly large", what);
    numel *= static_cast<uint64_t>(d);
  }
  const size_t data_start = header_start + header_len;
  const size_t have = b.size() - data_start;
  MF_CHECK(have == numel * itemsize, "{}: data is {} bytes but shape {} of {} needs {}", what, have, shape.str(),
           descr, numel * itemsize);
  Tensor t = Tensor::empty(shape);
  const uint8_t* src = b.data() + data_start;
  float* dst = t.data();
  for (uint64_t i = 0; i < numel; ++i) {
    if (itemsize == 4) {
      std::memcpy(dst + i, src + 4 * i, 4);
    } else if (itemsize == 8) {
      double d;
      std::memcpy(&d, src + 8 * i, 8);
      dst[i] = static_cast<float>(d);
    } else {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = half_bits_to_float(h);
    }
  }
  return t;
}

Tensor read_npy(const std::string& path) {
  auto f = MappedFile::open(path);
  return parse_npy(f->bytes(), path);
}

std::vector<uint8_t> encode_npy(const Tensor& t) {
  // Python's tuple syntax: "()", "(5,)", "(2, 3)".
  std::string shape = "(";
  for (int i = 0; i < t.ndim(); ++i) shape += (i ? ", " : "") + std::to_string(t.dim(i));
  shape += t.ndim() == 1 ? ",)" : ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so that magic + length + header + '\n' is a multiple of 64 bytes, as numpy does.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::vector<uint8_t> out{0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
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
