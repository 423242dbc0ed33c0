// safetensors and the file helpers beneath it: round trips, exact dtype conversion, a file written by
// Python, and one test per kind of malformed file, each checking the one-line message.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace mf::test {
namespace {

// A file image from a raw header string and data bytes.
std::vector<uint8_t> file_with(const std::string& header, const std::vector<uint8_t>& data = std::vector<uint8_t>(16)) {
  // Element by element: gcc 12 reports a false -Warray-bounds for vector::insert after a resize.
  std::vector<uint8_t> b;
  b.reserve(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i)));
  for (char c : header) b.push_back(static_cast<uint8_t>(c));
  for (uint8_t d : data) b.push_back(d);
  return b;
}

template <typename T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Parses a copy of `bytes` that the returned object keeps alive (it reads tensors lazily).
SafeTensors parse(const std::vector<uint8_t>& bytes) {
  auto owned = std::make_shared<std::vector<uint8_t>>(bytes);
  return SafeTensors::parse(*owned, owned, "t.safetensors");
}

// Succeeds when `f` throws an mf::Error whose one-line message contains `phrase`.
template <typename F>
testing::AssertionResult throws_with(F&& f, const std::string& phrase) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.find('\n') != std::string::npos) return testing::AssertionFailure() << "multi-line message: " << msg;
    if (msg.find(phrase) == std::string::npos)
      return testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << phrase << "\"";
    return testing::AssertionSuccess();
  }
  return testing::AssertionFailure() << "no mf::Error thrown (expected \"" << phrase << "\")";
}

// A malformed image must be rejected by parse() with a message that names the file first.
testing::AssertionResult rejects(const std::vector<uint8_t>& bytes, const std::string& phrase) {
  auto r = throws_with([&] { parse(bytes); }, phrase);
  if (!r) return r;
  try {
    parse(bytes);
  } catch (const Error& e) {
    if (std::string(e.what()).rfind("t.safetensors: ", 0) != 0)
      return testing::AssertionFailure() << "message does not start with the file name: " << e.what();
  }
  return testing::AssertionSuccess();
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, size_t begin,
                  size_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(begin) + "," + std::to_string(end) + "]}";
}

// The value of IEEE binary16 `h`, computed independently of the bit manipulation in the reader.
float half_reference(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  float mag;
  if (exp == 0x1F)
    mag = mant ? std::nanf("") : INFINITY;
  else if (exp == 0)
    mag = std::ldexp(static_cast<float>(mant), -24);
  else
    mag = std::ldexp(static_cast<float>(1024 + mant), exp - 25);
  return sign ? -mag : mag;
}

// ---------------------------------------------------------------------------------------------------
// Writing and reading back

TEST(SafeTensors, RoundTripsFloatsIntsAndMetadata) {
  TempDir dir;
  Tensor a = random_tensor({2, 3, 5}, 1);
  Tensor b = random_tensor({7}, 2);
  Tensor s = Tensor::full({}, -4.25f);  // a 0-d tensor
  save_safetensors(
      dir.file("x.safetensors"),
      {{"a", a, {}, {}}, {"steps", {}, {1, -2, int64_t{1} << 40}, {3}}, {"b", b, {}, {}}, {"s", s, {}, {}}},
      {{"format", "pt"}, {"note", "hello"}});
  SafeTensors st = SafeTensors::open(dir.file("x.safetensors"));
  EXPECT_EQ(st.what(), dir.file("x.safetensors"));
  EXPECT_EQ(st.names(), (std::vector<std::string>{"a", "steps", "b", "s"}));
  EXPECT_TRUE(st.contains("b"));
  EXPECT_FALSE(st.contains("c"));
  EXPECT_EQ(st.info("a").dtype, "F32");
  EXPECT_EQ(st.info("steps").dtype, "I64");
  EXPECT_EQ(st.info("steps").shape, (Shape{3}));
  EXPECT_EQ(st.load("a").shape(), a.shape());
  EXPECT_EQ(max_abs_diff(st.load("a"), a), 0.0);
  EXPECT_EQ(max_abs_diff(st.load("b"), b), 0.0);
  EXPECT_EQ(st.load("s").shape(), Shape{});
  EXPECT_EQ(st.load("s").data()[0], -4.25f);
  EXPECT_EQ(st.load_int("steps"), (std::vector<int64_t>{1, -2, int64_t{1} << 40}));
  EXPECT_EQ(st.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "hello"}}));
}

TEST(SafeTensors, EncodedLayoutFollowsTheFormat) {
  const std::vector<uint8_t> f =
      encode_safetensors({{"z", Tensor::full({2}, 1.f), {}, {}}, {"a", {}, {5}, {1}}}, {{"k", "v"}});
  uint64_t n;
  std::memcpy(&n, f.data(), 8);
  EXPECT_EQ(n % 8, 0u);  // padded with spaces, so the data section is 8-byte aligned
  ASSERT_EQ(f.size(), 8 + n + 8 + 8);
  const std::string header(f.begin() + 8, f.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));  // only spaces after the JSON
  const auto j = nlohmann::ordered_json::parse(header);
  // Tensors in the order given, offsets contiguous from 0.
  std::vector<std::string> keys;
  for (auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"__metadata__", "z", "a"}));
  EXPECT_EQ(j["z"]["dtype"], "F32");
  EXPECT_EQ(j["z"]["data_offsets"], nlohmann::ordered_json::parse("[0, 8]"));
  EXPECT_EQ(j["a"]["dtype"], "I64");
  EXPECT_EQ(j["a"]["shape"], nlohmann::ordered_json::parse("[1]"));
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::ordered_json::parse("[8, 16]"));
  EXPECT_EQ(j["__metadata__"]["k"], "v");
  int64_t five;
  std::memcpy(&five, f.data() + 8 + n + 8, 8);
  EXPECT_EQ(five, 5);
  // No metadata: no "__metadata__" key at all.
  const std::vector<uint8_t> g = encode_safetensors({{"z", Tensor::zeros({1}), {}, {}}});
  EXPECT_EQ(std::string(g.begin(), g.end()).find("__metadata__"), std::string::npos);
}

TEST(SafeTensors, EmptyFileAndEmptyTensors) {
  SafeTensors none = parse(file_with("{}", {}));
  EXPECT_TRUE(none.names().empty());
  EXPECT_TRUE(none.metadata().empty());
  SafeTensors meta_only = parse(file_with(R"({"__metadata__":{}})", {}));
  EXPECT_TRUE(meta_only.names().empty());
  // Empty tensors take no bytes and may sit anywhere, even inside another tensor's range.
  SafeTensors st = parse(file_with("{" + entry("e", "F32", "[0,4]", 4, 4) + "," + entry("a", "F32", "[4]", 0, 16) +
                                   "," + entry("i", "I32", "[0]", 16, 16) + "}"));
  EXPECT_EQ(st.load("e").numel(), 0);
  EXPECT_EQ(st.load("e").shape(), (Shape{0, 4}));
  EXPECT_TRUE(st.load_int("i").empty());
  EXPECT_EQ(st.names(), (std::vector<std::string>{"a", "e", "i"}));
  // encode_safetensors with no entries is a valid file too.
  EXPECT_TRUE(parse(encode_safetensors({})).names().empty());
}

TEST(SafeTensors, NamesFollowDataOffsetsNotJsonOrder) {
  std::vector<float> v{1, 2, 3, 4};
  SafeTensors st = parse(file_with("{" + entry("b", "F32", "[1]", 8, 12) + "," + entry("a", "F32", "[2]", 0, 8) + "," +
                                       entry("c", "F32", "[]", 12, 16) + "}",
                                   bytes_of(v)));
  EXPECT_EQ(st.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(st.load("b").data()[0], 3.f);
  EXPECT_EQ(st.load("c").data()[0], 4.f);
  EXPECT_EQ(st.info("a").begin, 0u);
  EXPECT_EQ(st.info("a").end, 8u);
}

TEST(SafeTensors, UnalignedOffsetsLoad) {
  // A 1-byte U8 tensor first, so every later tensor starts at an odd offset.
  std::vector<uint8_t> data{7};
  const std::vector<float> f{1.5f, -2.f, 3.25f};
  const std::vector<int64_t> i{-9, int64_t{1} << 50};
  for (uint8_t b : bytes_of(f)) data.push_back(b);
  for (uint8_t b : bytes_of(i)) data.push_back(b);
  SafeTensors st = parse(file_with("{" + entry("u", "U8", "[1]", 0, 1) + "," + entry("f", "F32", "[3]", 1, 13) + "," +
                                       entry("i", "I64", "[2]", 13, 29) + "}",
                                   data));
  Tensor t = st.load("f");
  EXPECT_EQ(t.data()[0], 1.5f);
  EXPECT_EQ(t.data()[2], 3.25f);
  EXPECT_EQ(st.load_int("i"), i);
  EXPECT_EQ(st.load_int("u"), (std::vector<int64_t>{7}));
}

// ---------------------------------------------------------------------------------------------------
// Dtype conversion

TEST(SafeTensors, HalfAndBfloat16KnownValues) {
  // F16: 1.0, -2.5, 65504 (max), 2^-24 (smallest subnormal), -0.0, +inf, -inf, 2^-14 (smallest
  // normal), 0x03FF (largest subnormal), nan.
  const std::vector<uint16_t> f16{0x3C00, 0xC100, 0x7BFF, 0x0001, 0x8000, 0x7C00, 0xFC00, 0x0400, 0x03FF, 0x7E00};
  // BF16: 1.0, -3.0, 2^-133 (a float32 subnormal), nan, -0.0, -inf.
  const std::vector<uint16_t> bf16{0x3F80, 0xC040, 0x0001, 0x7FC0, 0x8000, 0xFF80};
  std::vector<uint8_t> data = bytes_of(f16);
  for (uint8_t b : bytes_of(bf16)) data.push_back(b);
  SafeTensors st =
      parse(file_with("{" + entry("h", "F16", "[10]", 0, 20) + "," + entry("b", "BF16", "[2,3]", 20, 32) + "}", data));
  Tensor h = st.load("h");
  const float* hp = h.data();
  EXPECT_EQ(hp[0], 1.f);
  EXPECT_EQ(hp[1], -2.5f);
  EXPECT_EQ(hp[2], 65504.f);
  EXPECT_EQ(hp[3], std::ldexp(1.f, -24));
  EXPECT_EQ(hp[4], 0.f);
  EXPECT_TRUE(std::signbit(hp[4]));
  EXPECT_EQ(hp[5], INFINITY);
  EXPECT_EQ(hp[6], -INFINITY);
  EXPECT_EQ(hp[7], std::ldexp(1.f, -14));
  EXPECT_EQ(hp[8], std::ldexp(1023.f, -24));
  EXPECT_TRUE(std::isnan(hp[9]));
  Tensor b = st.load("b");
  EXPECT_EQ(b.shape(), (Shape{2, 3}));
  const float* bp = b.data();
  EXPECT_EQ(bp[0], 1.f);
  EXPECT_EQ(bp[1], -3.f);
  EXPECT_EQ(bp[2], std::ldexp(1.f, -133));
  EXPECT_TRUE(std::isnan(bp[3]));
  EXPECT_EQ(bp[4], 0.f);
  EXPECT_TRUE(std::signbit(bp[4]));
  EXPECT_EQ(bp[5], -INFINITY);
}

TEST(SafeTensors, EveryHalfAndBfloat16ValueConvertsExactly) {
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<uint8_t> data = bytes_of(all);
  data.insert(data.end(), data.begin(), data.end());
  SafeTensors st = parse(file_with(
      "{" + entry("h", "F16", "[65536]", 0, 131072) + "," + entry("b", "BF16", "[256,256]", 131072, 262144) + "}",
      data));
  Tensor h = st.load("h"), b = st.load("b");
  int bad_h = 0, bad_b = 0;
  for (uint32_t i = 0; i < 65536; ++i) {
    const float want = half_reference(static_cast<uint16_t>(i));
    const float got = h.data()[i];
    const bool same = std::isnan(want) ? std::isnan(got) && std::signbit(got) == std::signbit(want)
                                       : got == want && std::signbit(got) == std::signbit(want);
    bad_h += !same;
    bad_b += std::bit_cast<uint32_t>(b.data()[i]) != (i << 16);
  }
  EXPECT_EQ(bad_h, 0);
  EXPECT_EQ(bad_b, 0);
}

TEST(SafeTensors, Float64LoadsRoundedToFloat32) {
  const std::vector<double> d{0.1, -1e300, 3.0, 1e-320};
  SafeTensors st = parse(file_with("{" + entry("d", "F64", "[4]", 0, 32) + "}", bytes_of(d)));
  Tensor t = st.load("d");
  EXPECT_EQ(t.data()[0], 0.1f);
  EXPECT_EQ(t.data()[1], -INFINITY);
  EXPECT_EQ(t.data()[2], 3.f);
  EXPECT_EQ(t.data()[3], 0.f);
}

TEST(SafeTensors, IntegerDtypesWidenToInt64) {
  std::vector<uint8_t> data;
  auto add = [&](const auto& v) {
    for (uint8_t b : bytes_of(v)) data.push_back(b);
  };
  add(std::vector<int32_t>{-5, 2147483647});         // 0..8
  add(std::vector<int16_t>{-32768, 7});              // 8..12
  add(std::vector<int8_t>{-128, 127});               // 12..14
  add(std::vector<uint8_t>{255, 0});                 // 14..16
  add(std::vector<uint8_t>{1, 0});                   // 16..18 BOOL
  add(std::vector<uint16_t>{65535, 1});              // 18..22
  add(std::vector<uint32_t>{4294967295u, 2});        // 22..30
  add(std::vector<uint64_t>{uint64_t{1} << 62, 3});  // 30..46
  add(std::vector<uint64_t>{~uint64_t{0}});          // 46..54
  SafeTensors st =
      parse(file_with("{" + entry("i32", "I32", "[2]", 0, 8) + "," + entry("i16", "I16", "[2]", 8, 12) + "," +
                          entry("i8", "I8", "[2]", 12, 14) + "," + entry("u8", "U8", "[2]", 14, 16) + "," +
                          entry("bool", "BOOL", "[2]", 16, 18) + "," + entry("u16", "U16", "[2]", 18, 22) + "," +
                          entry("u32", "U32", "[2]", 22, 30) + "," + entry("u64", "U64", "[2]", 30, 46) + "," +
                          entry("big", "U64", "[1]", 46, 54) + "}",
                      data));
  EXPECT_EQ(st.load_int("i32"), (std::vector<int64_t>{-5, 2147483647}));
  EXPECT_EQ(st.load_int("i16"), (std::vector<int64_t>{-32768, 7}));
  EXPECT_EQ(st.load_int("i8"), (std::vector<int64_t>{-128, 127}));
  EXPECT_EQ(st.load_int("u8"), (std::vector<int64_t>{255, 0}));
  EXPECT_EQ(st.load_int("bool"), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(st.load_int("u16"), (std::vector<int64_t>{65535, 1}));
  EXPECT_EQ(st.load_int("u32"), (std::vector<int64_t>{4294967295LL, 2}));
  EXPECT_EQ(st.load_int("u64"), (std::vector<int64_t>{int64_t{1} << 62, 3}));
  EXPECT_TRUE(throws_with([&] { st.load_int("big"); }, "does not fit int64"));
}

TEST(SafeTensors, FileWrittenByPython) {
  // tools/golden/make_io_fixtures.py writes it by hand from the format description.
  SafeTensors st = SafeTensors::open(data_path("io/sample.safetensors"));
  EXPECT_EQ(st.metadata().at("written_by"), "make_io_fixtures.py");
  EXPECT_EQ(st.names(), (std::vector<std::string>{"f32", "f16", "bf16", "i64"}));
  Tensor f32 = st.load("f32");
  ASSERT_EQ(f32.shape(), (Shape{2, 3}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f32.data()[i], i + 0.5f);
  Tensor f16 = st.load("f16");
  ASSERT_EQ(f16.shape(), (Shape{5}));
  EXPECT_EQ(f16.data()[0], 1.f);
  EXPECT_EQ(f16.data()[1], -0.5f);
  EXPECT_EQ(f16.data()[2], std::ldexp(1.f, -24));  // smallest subnormal
  EXPECT_EQ(f16.data()[3], -INFINITY);
  EXPECT_EQ(f16.data()[4], 0.f);
  EXPECT_TRUE(std::signbit(f16.data()[4]));
  Tensor bf16 = st.load("bf16");
  ASSERT_EQ(bf16.shape(), (Shape{4}));
  EXPECT_EQ(bf16.data()[0], 1.f);
  EXPECT_EQ(bf16.data()[1], -2.f);
  EXPECT_EQ(bf16.data()[2], 3.f);
  EXPECT_EQ(bf16.data()[3], 1.0078125f);  // 1 + 2^-7: float32 bits truncated to bfloat16
  EXPECT_EQ(st.info("i64").dtype, "I64");
  EXPECT_EQ(st.load_int("i64"), (std::vector<int64_t>{-1, 0, 7, int64_t{-1} << 40}));
}

// ---------------------------------------------------------------------------------------------------
// Malformed files: one test per check

TEST(SafeTensorsMalformed, ShorterThanEightBytes) {
  EXPECT_TRUE(rejects({}, "not a safetensors file"));
  EXPECT_TRUE(rejects({1, 0, 0, 0, 0, 0, 0}, "not a safetensors file"));
}

TEST(SafeTensorsMalformed, HeaderSizeZero) { EXPECT_TRUE(rejects(file_with("", {}), "header size 0 is invalid")); }

TEST(SafeTensorsMalformed, HeaderSizeOver100MB) {
  std::vector<uint8_t> b(8, 0xFF);
  EXPECT_TRUE(rejects(b, "header size 18446744073709551615 is invalid"));
  const uint64_t n = 100'000'001;
  std::memcpy(b.data(), &n, 8);
  EXPECT_TRUE(rejects(b, "header size 100000001 is invalid"));
}

TEST(SafeTensorsMalformed, HeaderPastTheEnd) {
  std::vector<uint8_t> good = encode_safetensors({{"a", Tensor::zeros({16}), {}, {}}});
  EXPECT_TRUE(rejects({good.begin(), good.begin() + 20}, "truncated file"));
  std::vector<uint8_t> b = file_with("{}", {});
  b[0] = 3;  // claims one byte more than there is
  EXPECT_TRUE(rejects(b, "truncated file"));
}

TEST(SafeTensorsMalformed, DataSectionCut) {
  std::vector<uint8_t> good = encode_safetensors({{"a", Tensor::zeros({16}), {}, {}}});
  EXPECT_TRUE(rejects({good.begin(), good.end() - 1}, "outside the 63-byte data section"));
}

TEST(SafeTensorsMalformed, HeaderNotJson) {
  EXPECT_TRUE(rejects(file_with("{\"a\":"), "header is not valid JSON"));
  EXPECT_TRUE(rejects(file_with("{\"a\": 1} trailing"), "header is not valid JSON"));
  EXPECT_TRUE(rejects(file_with("{\"\xff\": 1}"), "header is not valid JSON"));  // not UTF-8
}

TEST(SafeTensorsMalformed, HeaderNotAnObject) {
  EXPECT_TRUE(rejects(file_with("[1,2]"), "header is not a JSON object"));
  EXPECT_TRUE(rejects(file_with("\"str\""), "header is not a JSON object"));
}

TEST(SafeTensorsMalformed, DeeplyNestedHeader) {
  // Deep enough to overflow the stack of a recursive parser that was not guarded.
  EXPECT_TRUE(rejects(file_with(std::string(1'000'000, '[') + std::string(1'000'000, ']')), "nested too deeply"));
  EXPECT_TRUE(rejects(file_with("{\"a\":" + std::string(100, '{')), "nested too deeply"));
  // Brackets inside strings do not count.
  EXPECT_NO_THROW(parse(file_with("{\"__metadata__\":{\"k\":\"" + std::string(1000, '[') + "\\\"\"}}")));
}

TEST(SafeTensorsMalformed, EntryNotAnObject) {
  EXPECT_TRUE(rejects(file_with(R"({"a":7})"), "entry 'a' is not an object"));
}

TEST(SafeTensorsMalformed, DtypeMissingOrNotAString) {
  EXPECT_TRUE(rejects(file_with(R"({"a":{"shape":[2],"data_offsets":[0,8]}})"), "tensor 'a' has no string dtype"));
  EXPECT_TRUE(rejects(file_with(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})"), "no string dtype"));
}

TEST(SafeTensorsMalformed, UnknownDtype) {
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "Q4", "[4]", 0, 16) + "}"), "tensor 'a' has unknown dtype 'Q4'"));
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "f32", "[4]", 0, 16) + "}"), "unknown dtype 'f32'"));
}

TEST(SafeTensorsMalformed, ShapeMissingOrNotAnArray) {
  EXPECT_TRUE(rejects(file_with(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})"), "tensor 'a' has no shape array"));
  EXPECT_TRUE(rejects(file_with(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})"), "no shape array"));
}

TEST(SafeTensorsMalformed, ShapeEntryNotANonNegativeInteger) {
  const std::string phrase = "tensor 'a' has a shape entry that is not a non-negative integer";
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[-4]", 0, 16) + "}"), phrase));
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[4.0]", 0, 16) + "}"), phrase));
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[\"4\"]", 0, 16) + "}"), phrase));
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[true]", 0, 16) + "}"), phrase));
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[9223372036854775808]", 0, 16) + "}"), phrase));
}

TEST(SafeTensorsMalformed, TooManyDimensions) {
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[1,1,1,1,1,1,4]", 0, 16) + "}"),
                      "tensor 'a' has 7 dimensions (at most 6)"));
}

TEST(SafeTensorsMalformed, ElementCountOverflows) {
  // 2^32 * 2^32 = 2^64 wraps to 0 in 64 bits; the product must be checked before it is formed.
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[4294967296,4294967296]", 0, 0) + "}"), "impossibly large"));
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[9223372036854775807]", 0, 16) + "}"), "impossibly large"));
}

TEST(SafeTensorsMalformed, DataOffsetsMissingOrWrongArity) {
  const std::string phrase = "tensor 'a' needs data_offsets [begin, end]";
  EXPECT_TRUE(rejects(file_with(R"({"a":{"dtype":"F32","shape":[4]}})"), phrase));
  EXPECT_TRUE(rejects(file_with(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0]}})"), phrase));
  EXPECT_TRUE(rejects(file_with(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8,16]}})"), phrase));
  EXPECT_TRUE(rejects(file_with(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":{"0":16}}})"), phrase));
}

TEST(SafeTensorsMalformed, DataOffsetNotANonNegativeInteger) {
  const std::string phrase = "tensor 'a' has a data offset that is not a non-negative integer";
  EXPECT_TRUE(rejects(file_with(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[-1,15]}})"), phrase));
  EXPECT_TRUE(rejects(file_with(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16.0]}})"), phrase));
  EXPECT_TRUE(rejects(file_with(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,1e100]}})"), phrase));
}

TEST(SafeTensorsMalformed, DataOffsetsReversed) {
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[1]", 8, 4) + "}"),
                      "tensor 'a' has data_offsets [8, 4] that end before they begin"));
}

TEST(SafeTensorsMalformed, DataOffsetsPastTheEnd) {
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[100]", 0, 400) + "}"),
                      "tensor 'a' has data_offsets [0, 400] outside the 16-byte data section"));
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[0]", 17, 17) + "}"), "outside the 16-byte data section"));
  EXPECT_TRUE(rejects(file_with(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[18446744073709551615,)"
                                R"(18446744073709551615]}})"),
                      "outside the"));
}

TEST(SafeTensorsMalformed, SizeDoesNotMatchDtypeAndShape) {
  EXPECT_TRUE(
      rejects(file_with("{" + entry("a", "F32", "[3]", 0, 16) + "}"), "tensor 'a' is 16 bytes but [3] x F32 needs 12"));
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "BF16", "[2,2]", 0, 16) + "}"), "needs 8"));
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[0]", 0, 4) + "}"), "needs 0"));
}

TEST(SafeTensorsMalformed, OverlappingTensors) {
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}"),
                      "tensors 'a' and 'b' overlap"));
  // Same range twice.
  EXPECT_TRUE(
      rejects(file_with("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 0, 8) + "}"), "overlap"));
  // 'c' overlaps 'a', which ends past 'b': comparing neighbours only would miss it.
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "U8", "[16]", 0, 16) + "," + entry("b", "U8", "[2]", 2, 4) + "}"),
                      "tensors 'a' and 'b' overlap"));
  EXPECT_TRUE(rejects(file_with("{" + entry("a", "U8", "[12]", 0, 12) + "," + entry("e", "U8", "[0]", 8, 8) + "," +
                                entry("c", "U8", "[4]", 8, 12) + "}"),
                      "tensors 'a' and 'c' overlap"));
  // Adjacent is fine.
  EXPECT_NO_THROW(parse(file_with("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 8, 16) + "}")));
}

TEST(SafeTensorsMalformed, MetadataNotAnObjectOfStrings) {
  EXPECT_TRUE(rejects(file_with(R"({"__metadata__":["x"]})"), "__metadata__ is not an object"));
  EXPECT_TRUE(rejects(file_with(R"({"__metadata__":{"k":3}})"), "metadata value of 'k' is not a string"));
  EXPECT_TRUE(rejects(file_with(R"({"__metadata__":{"k":{"x":"y"}}})"), "metadata value of 'k' is not a string"));
}

TEST(SafeTensorsMalformed, LoadOfAnIntegerTensorAsFloat) {
  SafeTensors st = parse(file_with("{" + entry("a", "I64", "[2]", 0, 16) + "}"));
  EXPECT_TRUE(throws_with([&] { st.load("a"); },
                          "t.safetensors: tensor 'a' has dtype I64; only floating-point tensors load as float32"));
}

TEST(SafeTensorsMalformed, Float8IsKnownButNotLoaded) {
  SafeTensors st = parse(file_with("{" + entry("a", "F8_E4M3", "[16]", 0, 16) + "}"));
  EXPECT_EQ(st.info("a").dtype, "F8_E4M3");
  EXPECT_TRUE(throws_with([&] { st.load("a"); }, "has dtype F8_E4M3; only floating-point tensors load as float32"));
  EXPECT_TRUE(throws_with([&] { st.load_int("a"); }, "only integer and BOOL tensors load as integers"));
}

TEST(SafeTensorsMalformed, LoadIntOfAFloatTensor) {
  SafeTensors st =
      parse(file_with("{" + entry("a", "F32", "[4]", 0, 16) + "," + entry("e", "F16", "[0]", 16, 16) + "}"));
  EXPECT_TRUE(throws_with([&] { st.load_int("a"); }, "tensor 'a' has dtype F32; only integer and BOOL tensors"));
  EXPECT_TRUE(throws_with([&] { st.load_int("e"); }, "tensor 'e' has dtype F16"));  // even when empty
}

TEST(SafeTensorsMalformed, NoTensorOfThatName) {
  SafeTensors st = parse(file_with("{}"));
  EXPECT_TRUE(throws_with([&] { st.load("missing"); }, "t.safetensors: no tensor named 'missing'"));
  EXPECT_TRUE(throws_with([&] { st.load_int("missing"); }, "no tensor named 'missing'"));
  EXPECT_TRUE(throws_with([&] { st.info("missing"); }, "no tensor named 'missing'"));
}

TEST(SafeTensorsMalformed, MissingFileOrDirectory) {
  EXPECT_TRUE(throws_with([] { SafeTensors::open("/nonexistent/w.safetensors"); },
                          "cannot open /nonexistent/w.safetensors: No such file or directory"));
  TempDir dir;
  EXPECT_TRUE(throws_with([&] { SafeTensors::open(dir.path()); }, "not a regular file"));
  write_bytes(dir.file("empty.safetensors"), {});
  EXPECT_TRUE(throws_with([&] { SafeTensors::open(dir.file("empty.safetensors")); },
                          dir.file("empty.safetensors") + ": not a safetensors file (only 0 bytes)"));
}

// ---------------------------------------------------------------------------------------------------
// Writer errors

TEST(SafeTensorsWriter, RejectsDuplicateAndReservedNames) {
  EXPECT_TRUE(throws_with(
      [] {
        encode_safetensors({{"a", Tensor::zeros({1}), {}, {}}, {"a", {}, {1}, {1}}});
      },
      "duplicate tensor name 'a'"));
  EXPECT_TRUE(throws_with(
      [] {
        encode_safetensors({{"__metadata__", Tensor::zeros({1}), {}, {}}});
      },
      "cannot save a tensor named '__metadata__'"));
}

TEST(SafeTensorsWriter, RejectsIntsThatDoNotFitTheShape) {
  EXPECT_TRUE(throws_with(
      [] {
        encode_safetensors({{"i", {}, {1, 2, 3}, {2, 2}}});
      },
      "cannot save tensor 'i': 3 integers for shape [2, 2]"));
}

TEST(SafeTensorsWriter, RejectsNamesThatAreNotUtf8) {
  EXPECT_TRUE(throws_with([] { encode_safetensors({{"bad\xff", Tensor::zeros({1}), {}, {}}}); }, "not valid UTF-8"));
  EXPECT_TRUE(throws_with([] { encode_safetensors({}, {{"k", "\xc3"}}); }, "not valid UTF-8"));
}

TEST(SafeTensorsWriter, EmptyNameIsAllowed) {
  // The format allows any JSON key, and whatever the reader accepts the writer must write back.
  SafeTensors st = parse(encode_safetensors({{"", Tensor::full({1}, 3.f), {}, {}}}));
  EXPECT_EQ(st.load("").data()[0], 3.f);
}

TEST(SafeTensorsWriter, UnicodeNamesAndMetadataRoundTrip) {
  const std::string name =
      "bl\xc3\xb6"
      "ck.\xe2\x82\xac";  // "blöck.€"
  SafeTensors st = parse(encode_safetensors({{name, Tensor::full({1}, 2.f), {}, {}}}, {{"\"quoted\"", "a\\b\n"}}));
  EXPECT_EQ(st.names(), std::vector<std::string>{name});
  EXPECT_EQ(st.load(name).data()[0], 2.f);
  EXPECT_EQ(st.metadata().at("\"quoted\""), "a\\b\n");
}

// ---------------------------------------------------------------------------------------------------
// io/file.h

size_t count_files(const std::string& dir) {
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) n += e.is_regular_file();
  return n;
}

TEST(File, AtomicWriteReplacesAndLeavesNoTempFile) {
  TempDir dir;
  const std::string path = dir.file("w.bin");
  write_file_atomic(path, std::vector<uint8_t>{1, 2, 3});
  EXPECT_EQ(read_file(path), (std::vector<uint8_t>{1, 2, 3}));
  write_file_atomic(path, std::vector<uint8_t>{9});
  EXPECT_EQ(read_file(path), (std::vector<uint8_t>{9}));
  write_file_atomic(path, {});
  EXPECT_TRUE(read_file(path).empty());
  EXPECT_EQ(count_files(dir.path()), 1u);
}

TEST(File, AtomicWriteFailureNamesThePathAndCleansUp) {
  TempDir dir;
  EXPECT_TRUE(throws_with(
      [&] {
        save_safetensors(dir.file("nope/w.safetensors"), {{"a", Tensor::zeros({1}), {}, {}}});
      },
      "cannot write " + dir.file("nope/w.safetensors") + ": No such file or directory"));
  // rename() fails when the target is a non-empty directory: the temp file must not stay behind.
  std::filesystem::create_directory(dir.file("taken"));
  write_bytes(dir.file("taken/x"), {1});
  EXPECT_TRUE(throws_with([&] { write_file_atomic(dir.file("taken"), std::vector<uint8_t>{1}); },
                          "cannot write " + dir.file("taken") + ": rename failed"));
  EXPECT_EQ(count_files(dir.path()), 0u);
}

TEST(File, MappedFile) {
  TempDir dir;
  write_bytes(dir.file("a"), {5, 6, 7});
  auto f = MappedFile::open(dir.file("a"));
  EXPECT_EQ(f->size(), 3u);
  EXPECT_EQ(f->path(), dir.file("a"));
  EXPECT_EQ(std::vector<uint8_t>(f->bytes().begin(), f->bytes().end()), (std::vector<uint8_t>{5, 6, 7}));
  write_bytes(dir.file("empty"), {});
  auto e = MappedFile::open(dir.file("empty"));
  EXPECT_EQ(e->size(), 0u);
  EXPECT_TRUE(e->bytes().empty());
  EXPECT_TRUE(throws_with([&] { MappedFile::open(dir.file("missing")); },
                          "cannot open " + dir.file("missing") + ": No such file or directory"));
}

TEST(File, ReadFile) {
  TempDir dir;
  std::vector<uint8_t> big(200'000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7);
  write_bytes(dir.file("big"), big);
  EXPECT_EQ(read_file(dir.file("big")), big);
  EXPECT_TRUE(throws_with([&] { read_file(dir.file("missing")); }, "cannot open " + dir.file("missing")));
  EXPECT_TRUE(throws_with([&] { read_file(dir.path()); }, "is a directory"));
}

}  // namespace
}  // namespace mf::test
