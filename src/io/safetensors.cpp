#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>
#include <tuple>

#include "core/bf16_bits.h"
#include "core/error.h"
#include "io/file.h"

namespace mf {

// The format is little-endian, and so is every host we build for: numbers are copied byte for byte
// (with memcpy, because data offsets carry no alignment guarantee).
static_assert(std::endian::native == std::endian::little, "the safetensors reader assumes a little-endian host");

namespace {

constexpr uint64_t kMaxHeader = 100'000'000;  // the reference implementation's limit
constexpr int kMaxJsonDepth = 64;             // real headers nest 3 deep
// Per dimension and per tensor; far beyond any real tensor, and small enough that numel * 8 cannot
// overflow 64 bits.
constexpr uint64_t kMaxElements = uint64_t{1} << 48;

enum class Kind { Float, Int, Unsupported };

struct FileDType {
  std::string_view name;
  size_t size;
  Kind kind;
};

constexpr FileDType kDTypes[] = {
    {"F64", 8, Kind::Float},
    {"F32", 4, Kind::Float},
    {"F16", 2, Kind::Float},
    {"BF16", 2, Kind::Float},
    {"I64", 8, Kind::Int},
    {"I32", 4, Kind::Int},
    {"I16", 2, Kind::Int},
    {"I8", 1, Kind::Int},
    {"U64", 8, Kind::Int},
    {"U32", 4, Kind::Int},
    {"U16", 2, Kind::Int},
    {"U8", 1, Kind::Int},
    {"BOOL", 1, Kind::Int},
    {"F8_E4M3", 1, Kind::Unsupported},
    {"F8_E5M2", 1, Kind::Unsupported},
    {"F8_E8M0", 1, Kind::Unsupported},
};

const FileDType* find_dtype(std::string_view name) {
  for (const FileDType& d : kDTypes)
    if (d.name == name) return &d;
  return nullptr;
}

// Deepest bracket nesting outside strings. nlohmann's parser recurses once per level, so a header of
// a million '[' would exhaust the stack before it could report an error.
int json_depth(std::string_view s) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

// IEEE 754 binary16 -> binary32. Every half value is exactly representable as a float, so this is
// pure bit manipulation: rebias the exponent, and normalise subnormals (a float has the range).
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {  // inf or nan; the payload is kept
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 127u - 15u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal: mant * 2^-24. Shift the leading 1 up to the implicit-bit position (bit 10).
    uint32_t e = 127u - 15u + 1u;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

template <typename T>
T read_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Stores a JSON number that is a non-negative integer no larger than `max` in `out`; false for anything
// else. "-0" counts as 0.
bool non_negative_integer(const nlohmann::json& v, uint64_t max, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
  } else if (v.is_number_integer() && v.get<int64_t>() == 0) {
    out = 0;
  } else {
    return false;
  }
  return out <= max;
}

}  // namespace

namespace {

// Reads exactly n bytes at `offset`; false when the file ends first. mf::Error on a read error.
bool pread_exact(int fd, uint8_t* dst, size_t n, uint64_t offset, const std::string& what) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, dst + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail("cannot read {}: {}", what, std::strerror(errno));
    if (r == 0) return false;
    done += static_cast<size_t>(r);
  }
  return true;
}

// Test hook: MF_DEBUG_TRUNCATE_AFTER_HEADER=N truncates the file to N bytes right after its header
// is read, as another process could at that moment, so that a test can show that loading then
// fails cleanly (it used to die of SIGBUS) without depending on timing.
void maybe_truncate_after_header(const std::string& path) {
  const char* v = std::getenv("MF_DEBUG_TRUNCATE_AFTER_HEADER");
  if (v && *v) {
    const int rc = ::truncate(path.c_str(), static_cast<off_t>(std::atoll(v)));
    (void)rc;
  }
}

}  // namespace

SafeTensors SafeTensors::open(const std::string& path) {
  const int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) fail("cannot open {}: {}", path, std::strerror(errno));
  std::shared_ptr<const int> fd(new int(raw), [](const int* p) {
    ::close(*p);
    delete p;
  });
  struct stat st {};
  if (::fstat(raw, &st) != 0) fail("cannot open {}: {}", path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail("cannot open {}: not a regular file", path);
  const auto size = static_cast<uint64_t>(st.st_size);
  uint8_t len[8] = {};
  MF_CHECK(size >= 8 && pread_exact(raw, len, 8, 0, path), "{}: not a safetensors file (only {} bytes)", path, size);
  const uint64_t n = read_le<uint64_t>(len);
  MF_CHECK(n > 0 && n <= kMaxHeader, "{}: header size {} is invalid (must be 1 to {} bytes)", path, n, kMaxHeader);
  MF_CHECK(n <= size - 8, "{}: truncated file: the header claims {} bytes but only {} follow", path, n, size - 8);
  // The header, followed by the data section's size, makes a "file image" for parse() to validate.
  std::vector<uint8_t> head(static_cast<size_t>(8 + n));
  std::memcpy(head.data(), len, 8);
  MF_CHECK(pread_exact(raw, head.data() + 8, static_cast<size_t>(n), 8, path),
           "{}: truncated file: the header claims {} bytes but the file ended first", path, n);
  maybe_truncate_after_header(path);
  SafeTensors st_out = parse_header(head, size - 8 - n, path);
  st_out.fd_ = std::move(fd);
  st_out.data_offset_ = 8 + n;
  return st_out;
}

SafeTensors SafeTensors::parse(std::span<const uint8_t> bytes, std::shared_ptr<void> owner, const std::string& what) {
  MF_CHECK(bytes.size() >= 8, "{}: not a safetensors file (only {} bytes)", what, bytes.size());
  const uint64_t n = read_le<uint64_t>(bytes.data());
  MF_CHECK(n > 0 && n <= kMaxHeader, "{}: header size {} is invalid (must be 1 to {} bytes)", what, n, kMaxHeader);
  MF_CHECK(n <= bytes.size() - 8, "{}: truncated file: the header claims {} bytes but only {} follow", what, n,
           bytes.size() - 8);
  SafeTensors st = parse_header(bytes.first(static_cast<size_t>(8 + n)), bytes.size() - 8 - n, what);
  st.owner_ = std::move(owner);
  st.data_ = bytes.subspan(static_cast<size_t>(8 + n));
  return st;
}

SafeTensors SafeTensors::parse_header(std::span<const uint8_t> head, uint64_t data_size, const std::string& what) {
  SafeTensors st;
  st.what_ = what;
  const std::string_view header(reinterpret_cast<const char*>(head.data() + 8), head.size() - 8);
  MF_CHECK(json_depth(header) <= kMaxJsonDepth, "{}: header JSON is nested too deeply", what);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  } catch (const nlohmann::json::exception&) {  // not expected with exceptions off; kept as a net
    j = nlohmann::json::value_t::discarded;
  }
  MF_CHECK(!j.is_discarded(), "{}: header is not valid JSON", what);
  MF_CHECK(j.is_object(), "{}: header is not a JSON object", what);

  std::vector<SafeTensorInfo> infos;
  for (const auto& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      MF_CHECK(entry.is_object(), "{}: __metadata__ is not an object", what);
      for (const auto& [k, v] : entry.items()) {
        MF_CHECK(v.is_string(), "{}: metadata value of '{}' is not a string", what, k);
        st.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    MF_CHECK(entry.is_object(), "{}: entry '{}' is not an object", what, name);
    const auto dt = entry.find("dtype");
    const auto sh = entry.find("shape");
    const auto off = entry.find("data_offsets");
    MF_CHECK(dt != entry.end() && dt->is_string(), "{}: tensor '{}' has no string dtype", what, name);
    MF_CHECK(sh != entry.end() && sh->is_array(), "{}: tensor '{}' has no shape array", what, name);
    MF_CHECK(off != entry.end() && off->is_array() && off->size() == 2,
             "{}: tensor '{}' needs data_offsets [begin, end]", what, name);
    SafeTensorInfo info;
    info.name = name;
    info.dtype = dt->get<std::string>();
    const FileDType* dtype = find_dtype(info.dtype);
    MF_CHECK(dtype, "{}: tensor '{}' has unknown dtype '{}'", what, name, info.dtype);
    MF_CHECK(sh->size() <= static_cast<size_t>(Shape::kMaxDims), "{}: tensor '{}' has {} dimensions (at most {})", what,
             name, sh->size(), Shape::kMaxDims);
    std::vector<int64_t> dims;
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      uint64_t v = 0;
      MF_CHECK(non_negative_integer(d, std::numeric_limits<int64_t>::max(), v),
               "{}: tensor '{}' has a shape entry that is not a non-negative integer", what, name);
      MF_CHECK(v <= kMaxElements && (v == 0 || numel <= kMaxElements / v), "{}: tensor '{}' is impossibly large", what,
               name);
      numel *= v;
      dims.push_back(static_cast<int64_t>(v));
    }
    info.shape = Shape(std::span<const int64_t>(dims));
    uint64_t begin = 0, end = 0;
    MF_CHECK(non_negative_integer((*off)[0], std::numeric_limits<uint64_t>::max(), begin) &&
                 non_negative_integer((*off)[1], std::numeric_limits<uint64_t>::max(), end),
             "{}: tensor '{}' has a data offset that is not a non-negative integer", what, name);
    MF_CHECK(begin <= end, "{}: tensor '{}' has data_offsets [{}, {}] that end before they begin", what, name, begin,
             end);
    MF_CHECK(end <= data_size,
             "{}: tensor '{}' has data_offsets [{}, {}] outside the {}-byte data section (truncated file?)", what, name,
             begin, end, data_size);
    MF_CHECK(end - begin == numel * dtype->size, "{}: tensor '{}' is {} bytes but {} x {} needs {}", what, name,
             end - begin, info.shape.str(), info.dtype, numel * dtype->size);
    info.begin = static_cast<size_t>(begin);
    info.end = static_cast<size_t>(end);
    infos.push_back(std::move(info));
  }
  std::sort(infos.begin(), infos.end(), [](const SafeTensorInfo& a, const SafeTensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // Sorted by begin, non-empty ranges are disjoint iff each starts at or after the furthest end so far.
  // Empty tensors occupy no bytes and so cannot overlap anything.
  const SafeTensorInfo* furthest = nullptr;
  for (const SafeTensorInfo& info : infos) {
    if (info.begin == info.end) continue;
    MF_CHECK(!furthest || info.begin >= furthest->end, "{}: tensors '{}' and '{}' overlap", what, furthest->name,
             info.name);
    if (!furthest || info.end > furthest->end) furthest = &info;
  }
  st.names_.reserve(infos.size());
  for (SafeTensorInfo& info : infos) {
    st.names_.push_back(info.name);
    st.index_.emplace(info.name, std::move(info));
  }
  return st;
}

const SafeTensorInfo& SafeTensors::info(const std::string& name) const {
  const auto it = index_.find(name);
  MF_CHECK(it != index_.end(), "{}: no tensor named '{}'", what_, name);
  return it->second;
}

Tensor SafeTensors::load(const std::string& name) const {
  const SafeTensorInfo& in = info(name);
  const FileDType* dtype = find_dtype(in.dtype);
  MF_ASSERT(dtype);
  MF_CHECK(dtype->kind == Kind::Float,
           "{}: tensor '{}' has dtype {}; only floating-point tensors load as float32 (F32, F16, BF16, F64)", what_,
           name, in.dtype);
  Tensor t = Tensor::empty(in.shape);
  float* dst = t.data();
  const auto n = static_cast<size_t>(in.shape.numel());
  if (in.dtype == "F32") {
    if (n) read_data(in.begin, n * 4, reinterpret_cast<uint8_t*>(dst), name);
    return t;
  }
  std::vector<uint8_t> raw(in.end - in.begin);
  read_data(in.begin, raw.size(), raw.data(), name);
  const uint8_t* src = raw.data();
  if (in.dtype == "F16") {
    for (size_t i = 0; i < n; ++i) dst[i] = half_to_float(read_le<uint16_t>(src + 2 * i));
  } else if (in.dtype == "BF16") {
    for (size_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_float(read_le<uint16_t>(src + 2 * i));
  } else {
    MF_ASSERT(in.dtype == "F64");
    // Rounds to nearest; values beyond float's range become infinities (IEEE conversion).
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(read_le<double>(src + 8 * i));
  }
  return t;
}

std::vector<int64_t> SafeTensors::load_int(const std::string& name) const {
  const SafeTensorInfo& in = info(name);
  const FileDType* dtype = find_dtype(in.dtype);
  MF_ASSERT(dtype);
  MF_CHECK(dtype->kind == Kind::Int, "{}: tensor '{}' has dtype {}; only integer and BOOL tensors load as integers",
           what_, name, in.dtype);
  const auto n = static_cast<size_t>(in.shape.numel());
  std::vector<uint8_t> raw(in.end - in.begin);
  read_data(in.begin, raw.size(), raw.data(), name);
  const uint8_t* src = raw.data();
  std::vector<int64_t> out(n);
  const std::string& d = in.dtype;
  if (d == "I64") {
    if (n) std::memcpy(out.data(), src, n * 8);
  } else if (d == "U64") {
    for (size_t i = 0; i < n; ++i) {
      const auto v = read_le<uint64_t>(src + 8 * i);
      MF_CHECK(v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
               "{}: tensor '{}' holds {}, which does not fit int64", what_, name, v);
      out[i] = static_cast<int64_t>(v);
    }
  } else if (d == "I32") {
    for (size_t i = 0; i < n; ++i) out[i] = read_le<int32_t>(src + 4 * i);
  } else if (d == "U32") {
    for (size_t i = 0; i < n; ++i) out[i] = read_le<uint32_t>(src + 4 * i);
  } else if (d == "I16") {
    for (size_t i = 0; i < n; ++i) out[i] = read_le<int16_t>(src + 2 * i);
  } else if (d == "U16") {
    for (size_t i = 0; i < n; ++i) out[i] = read_le<uint16_t>(src + 2 * i);
  } else if (d == "I8") {
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<int8_t>(src[i]);
  } else {
    MF_ASSERT(d == "U8" || d == "BOOL");
    for (size_t i = 0; i < n; ++i) out[i] = src[i];
  }
  return out;
}

void SafeTensors::read_data(size_t begin, size_t n, uint8_t* dst, const std::string& tensor) const {
  if (n == 0) return;
  if (!fd_) {
    std::memcpy(dst, data_.data() + begin, n);
    return;
  }
  MF_CHECK(pread_exact(*fd_, dst, n, data_offset_ + begin, what_),
           "{}: the file ended while reading tensor '{}' (it was truncated while loading?)", what_, tensor);
}

std::vector<uint8_t> encode_safetensors(const std::vector<SafeTensorEntry>& entries,
                                        const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& e : entries) {
    MF_CHECK(e.name != "__metadata__", "cannot save a tensor named '__metadata__' (the key is reserved)");
    MF_CHECK(seen.insert(e.name).second, "cannot save: duplicate tensor name '{}'", e.name);
    const bool is_float = e.tensor.defined();
    const Shape& shape = is_float ? e.tensor.shape() : e.int_shape;
    if (!is_float)
      MF_CHECK(static_cast<int64_t>(e.ints.size()) == shape.numel(),
               "cannot save tensor '{}': {} integers for shape {}", e.name, e.ints.size(), shape.str());
    const uint64_t bytes = static_cast<uint64_t>(shape.numel()) * (is_float ? 4 : 8);
    header[e.name] = {
        {"dtype", is_float ? "F32" : "I64"}, {"shape", shape.vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h;
  try {
    h = header.dump();  // strict: throws on a name or metadata string that is not UTF-8
  } catch (const nlohmann::json::exception&) {
    fail("cannot save a safetensors file: a tensor name or metadata string is not valid UTF-8");
  }
  // Pad with spaces (valid JSON whitespace) so that the data section starts 8-byte aligned, as the
  // reference writer does; readers can then view F32/I64 data in place.
  h.append((8 - h.size() % 8) % 8, ' ');
  std::vector<uint8_t> out(8 + h.size() + static_cast<size_t>(offset));
  const uint64_t n = h.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, h.data(), h.size());
  uint8_t* p = out.data() + 8 + h.size();
  for (const auto& e : entries) {
    if (e.tensor.defined()) {
      const size_t bytes = static_cast<size_t>(e.tensor.numel()) * 4;
      if (bytes) std::memcpy(p, e.tensor.data(), bytes);
      p += bytes;
    } else {
      if (!e.ints.empty()) std::memcpy(p, e.ints.data(), e.ints.size() * 8);
      p += e.ints.size() * 8;
    }
  }
  return out;
}

void save_safetensors(const std::string& path, const std::vector<SafeTensorEntry>& entries,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, encode_safetensors(entries, metadata));
}

}  // namespace mf
