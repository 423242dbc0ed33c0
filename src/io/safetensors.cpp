#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/file.h"

namespace mf {

namespace {

constexpr uint64_t kMaxHeader = 100u << 20;  // the reference implementation's limit
constexpr int kMaxJsonDepth = 64;

// Element size of each dtype the format defines; 0 for names it does not define.
size_t dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

// Nesting depth of brackets outside strings (nlohmann's parser recurses once per level).
int json_depth(std::string_view s) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
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

// IEEE 754 binary16 -> binary32, exact (subnormals, infinities, NaN included).
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while (!(mant & 0x400u));
    bits = sign | ((112u - static_cast<uint32_t>(e)) << 23) | ((mant & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <typename T>
T read_le(const uint8_t* p) {  // the format is little-endian, like every host we build for
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

SafeTensors SafeTensors::open(const std::string& path) {
  auto file = MappedFile::open(path);
  const auto bytes = file->bytes();
  return parse(bytes, std::move(file), path);
}

SafeTensors SafeTensors::parse(std::span<const uint8_t> bytes, std::shared_ptr<void> owner, const std::string& what) {
  SafeTensors st;
  st.owner_ = std::move(owner);
  st.what_ = what;
  MF_CHECK(bytes.size() >= 8, "{}: not a safetensors file (only {} bytes)", what, bytes.size());
  const uint64_t n = read_le<uint64_t>(bytes.data());
  MF_CHECK(n > 0 && n <= kMaxHeader, "{}: header size {} is invalid", what, n);
  MF_CHECK(n <= bytes.size() - 8, "{}: truncated: the header claims {} bytes but the file has {}", what, n,
           bytes.size() - 8);
  const std::string_view header(reinterpret_cast<const char*>(bytes.data() + 8), n);
  MF_CHECK(json_depth(header) <= kMaxJsonDepth, "{}: header JSON is nested too deeply", what);
  const nlohmann::json j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  MF_CHECK(!j.is_discarded(), "{}: header is not valid JSON", what);
  MF_CHECK(j.is_object(), "{}: header is not a JSON object", what);
  st.data_ = bytes.subspan(8 + n);
  const size_t data_size = st.data_.size();

  std::vector<SafeTensorInfo> infos;
  for (auto& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      MF_CHECK(entry.is_object(), "{}: __metadata__ is not an object", what);
      for (auto& [k, v] : entry.items()) {
        MF_CHECK(v.is_string(), "{}: metadata value of '{}' is not a string", what, k);
        st.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    MF_CHECK(entry.is_object(), "{}: entry '{}' is not an object", what, name);
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    MF_CHECK(dt != entry.end() && dt->is_string(), "{}: tensor '{}' has no string dtype", what, name);
    MF_CHECK(sh != entry.end() && sh->is_array(), "{}: tensor '{}' has no shape array", what, name);
    MF_CHECK(off != entry.end() && off->is_array() && off->size() == 2, "{}: tensor '{}' needs data_offsets [begin, end]",
             what, name);
    SafeTensorInfo info;
    info.name = name;
    info.dtype = dt->get<std::string>();
    const size_t esize = dtype_size(info.dtype);
    MF_CHECK(esize > 0, "{}: tensor '{}' has unknown dtype '{}'", what, name, info.dtype);
    MF_CHECK(sh->size() <= static_cast<size_t>(Shape::kMaxDims), "{}: tensor '{}' has {} dimensions (at most {})",
             what, name, sh->size(), Shape::kMaxDims);
    std::vector<int64_t> dims;
    uint64_t numel = 1;
    for (auto& d : *sh) {
      MF_CHECK(d.is_number_unsigned(), "{}: tensor '{}' has a shape entry that is not a non-negative integer", what,
               name);
      const uint64_t v = d.get<uint64_t>();
      MF_CHECK(v <= (1ULL << 40) && (v == 0 || numel <= (1ULL << 40) / v), "{}: tensor '{}' is impossibly large",
               what, name);
      numel *= v;
      dims.push_back(static_cast<int64_t>(v));
    }
    info.shape = Shape(std::span<const int64_t>(dims));
    for (auto& o : *off)
      MF_CHECK(o.is_number_unsigned(), "{}: tensor '{}' has a data offset that is not a non-negative integer", what,
               name);
    const uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
    MF_CHECK(begin <= end && end <= data_size,
             "{}: tensor '{}' has data offsets [{}, {}] outside the {}-byte data section (truncated file?)", what,
             name, begin, end, data_size);
    MF_CHECK(end - begin == numel * esize, "{}: tensor '{}' is {} bytes but {} x {} needs {}", what, name, end - begin,
             info.shape.str(), info.dtype, numel * esize);
    info.begin = static_cast<size_t>(begin);
    info.end = static_cast<size_t>(end);
    infos.push_back(std::move(info));
  }
  std::sort(infos.begin(), infos.end(), [](auto& a, auto& b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
  for (size_t i = 1; i < infos.size(); ++i)
    MF_CHECK(infos[i].begin >= infos[i - 1].end || infos[i - 1].begin == infos[i - 1].end,
             "{}: tensors '{}' and '{}' overlap", what, infos[i - 1].name, infos[i].name);
  for (auto& info : infos) {
    st.names_.push_back(info.name);
    st.index_.emplace(info.name, std::move(info));
  }
  return st;
}

const SafeTensorInfo& SafeTensors::info(const std::string& name) const {
  auto it = index_.find(name);
  MF_CHECK(it != index_.end(), "{}: no tensor named '{}'", what_, name);
  return it->second;
}

Tensor SafeTensors::load(const std::string& name) const {
  const SafeTensorInfo& in = info(name);
  Tensor t = Tensor::empty(in.shape);
  const uint8_t* src = data_.data() + in.begin;
  float* dst = t.data();
  const int64_t n = in.shape.numel();
  if (in.dtype == "F32") {
    if (n) std::memcpy(dst, src, static_cast<size_t>(n) * 4);  // offsets need not be aligned
  } else if (in.dtype == "F16") {
    for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(read_le<uint16_t>(src + 2 * i));
  } else if (in.dtype == "BF16") {
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(read_le<uint16_t>(src + 2 * i));
  } else if (in.dtype == "F64") {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(read_le<double>(src + 8 * i));
  } else {
    fail("{}: tensor '{}' has dtype {}; only floating-point tensors (F32, F16, BF16, F64) load as float32", what_,
         name, in.dtype);
  }
  return t;
}

std::vector<int64_t> SafeTensors::load_int(const std::string& name) const {
  const SafeTensorInfo& in = info(name);
  const uint8_t* src = data_.data() + in.begin;
  const auto n = static_cast<size_t>(in.shape.numel());
  std::vector<int64_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (in.dtype == "I64") out[i] = read_le<int64_t>(src + 8 * i);
    else if (in.dtype == "I32") out[i] = read_le<int32_t>(src + 4 * i);
    else if (in.dtype == "I16") out[i] = read_le<int16_t>(src + 2 * i);
    else if (in.dtype == "I8") out[i] = static_cast<int8_t>(src[i]);
    else if (in.dtype == "U8" || in.dtype == "BOOL") out[i] = src[i];
    else fail("{}: tensor '{}' has dtype {}; only integer tensors load as integers", what_, name, in.dtype);
  }
  return out;
}

std::vector<uint8_t> encode_safetensors(const std::vector<SafeTensorEntry>& entries,
                                        const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const auto& e : entries) {
    MF_CHECK(!e.name.empty() && e.name != "__metadata__", "cannot save a tensor named '{}'", e.name);
    MF_CHECK(!header.contains(e.name), "duplicate tensor name '{}'", e.name);
    const bool is_float = e.tensor.defined();
    const Shape shape = is_float ? e.tensor.shape() : e.int_shape;
    if (!is_float)
      MF_CHECK(static_cast<int64_t>(e.ints.size()) == shape.numel(), "tensor '{}': {} integers for shape {}", e.name,
               e.ints.size(), shape.str());
    const size_t bytes = static_cast<size_t>(shape.numel()) * (is_float ? 4 : 8);
    header[e.name] = {{"dtype", is_float ? "F32" : "I64"}, {"shape", shape.vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // pad so that the data section starts 8-byte aligned
  std::vector<uint8_t> out(8 + h.size() + offset);
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
