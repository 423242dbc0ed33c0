// safetensors: round trips, dtype conversion, and one test per kind of malformed file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace mf::test {
namespace {

// A file image from a raw header string and data bytes.
std::vector<uint8_t> file_with(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b(8);
  const uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  for (char c : header) b.push_back(static_cast<uint8_t>(c));
  for (uint8_t d : data) b.push_back(d);
  return b;
}

// Parses a copy of `bytes` that the returned object keeps alive (it reads tensors lazily).
SafeTensors parse(const std::vector<uint8_t>& bytes) {
  auto owned = std::make_shared<std::vector<uint8_t>>(bytes);
  return SafeTensors::parse(*owned, owned, "t.safetensors");
}

std::string error_of(const std::vector<uint8_t>& bytes, const std::string& load = "") {
  try {
    SafeTensors st = parse(bytes);
    if (!load.empty()) st.load(load);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(SafeTensors, RoundTripsFloatsIntsAndMetadata) {
  TempDir dir;
  Tensor a = random_tensor({2, 3, 5}, 1);
  Tensor b = random_tensor({7}, 2);
  save_safetensors(dir.file("x.safetensors"), {{"a", a, {}, {}}, {"steps", {}, {1, -2, 1LL << 40}, {3}}, {"b", b, {}, {}}},
                   {{"format", "pt"}, {"note", "hello"}});
  SafeTensors st = SafeTensors::open(dir.file("x.safetensors"));
  EXPECT_EQ(st.names(), (std::vector<std::string>{"a", "steps", "b"}));
  EXPECT_EQ(st.info("a").dtype, "F32");
  EXPECT_EQ(st.info("steps").dtype, "I64");
  EXPECT_EQ(max_abs_diff(st.load("a"), a), 0.0);
  EXPECT_EQ(st.load("a").shape(), a.shape());
  EXPECT_EQ(max_abs_diff(st.load("b"), b), 0.0);
  EXPECT_EQ(st.load_int("steps"), (std::vector<int64_t>{1, -2, 1LL << 40}));
  EXPECT_EQ(st.metadata().at("note"), "hello");
  // The data section starts 8-byte aligned, as the reference writer pads the header.
  const auto bytes = read_bytes(dir.file("x.safetensors"));
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
}

TEST(SafeTensors, HalfAndBfloat16ConvertExactly) {
  // F16: 1.0, -2.5, 65504 (max), smallest subnormal 2^-24, -0.0, +inf.
  const std::vector<uint16_t> f16{0x3C00, 0xC100, 0x7BFF, 0x0001, 0x8000, 0x7C00};
  // BF16: 1.0, -3.0, 2^-133 (a float32 subnormal), nan.
  const std::vector<uint16_t> bf16{0x3F80, 0xC040, 0x0001, 0x7FC0};
  std::vector<uint8_t> data(2 * (f16.size() + bf16.size()));
  std::memcpy(data.data(), f16.data(), 2 * f16.size());
  std::memcpy(data.data() + 2 * f16.size(), bf16.data(), 2 * bf16.size());
  SafeTensors st = parse(file_with(
      R"({"h":{"dtype":"F16","shape":[6],"data_offsets":[0,12]},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[12,20]}})",
      data));
  Tensor h = st.load("h");
  EXPECT_EQ(h.data()[0], 1.f);
  EXPECT_EQ(h.data()[1], -2.5f);
  EXPECT_EQ(h.data()[2], 65504.f);
  EXPECT_EQ(h.data()[3], std::ldexp(1.f, -24));
  EXPECT_EQ(h.data()[4], 0.f);
  EXPECT_TRUE(std::signbit(h.data()[4]));
  EXPECT_TRUE(std::isinf(h.data()[5]));
  Tensor b = st.load("b");
  EXPECT_EQ(b.shape(), (Shape{2, 2}));
  EXPECT_EQ(b.data()[0], 1.f);
  EXPECT_EQ(b.data()[1], -3.f);
  EXPECT_EQ(b.data()[2], std::ldexp(1.f, -133));
  EXPECT_TRUE(std::isnan(b.data()[3]));
}

TEST(SafeTensors, FixtureWrittenByPython) {
  // tools/golden/make_io_fixtures.py writes it by hand from the format description.
  SafeTensors st = SafeTensors::open(data_path("io/sample.safetensors"));
  EXPECT_EQ(st.metadata().at("written_by"), "make_io_fixtures.py");
  Tensor f32 = st.load("f32");
  ASSERT_EQ(f32.shape(), (Shape{2, 3}));
  EXPECT_EQ(f32.data()[5], 5.5f);
  EXPECT_EQ(st.load("f16").data()[1], -0.5f);
  EXPECT_EQ(st.load("bf16").data()[2], 3.f);
  EXPECT_EQ(st.load_int("i64"), (std::vector<int64_t>{-1, 0, 7}));
}

TEST(SafeTensors, EmptyTensorsAndEmptyFile) {
  SafeTensors st = parse(file_with(R"({"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]}})", {}));
  EXPECT_EQ(st.load("e").numel(), 0);
  SafeTensors none = parse(file_with("{}", {}));
  EXPECT_TRUE(none.names().empty());
}

TEST(SafeTensors, TruncatedFile) {
  std::vector<uint8_t> good = encode_safetensors({{"a", Tensor::zeros({16}), {}, {}}});
  EXPECT_NE(error_of({good.begin(), good.begin() + 5}).find("not a safetensors file"), std::string::npos);
  EXPECT_NE(error_of({good.begin(), good.end() - 1}).find("outside the"), std::string::npos);
  EXPECT_NE(error_of({good.begin(), good.begin() + 20}).find("truncated"), std::string::npos);
}

TEST(SafeTensors, HeaderSizeAndJson) {
  EXPECT_NE(error_of(file_with("", {})).find("header size 0"), std::string::npos);
  std::vector<uint8_t> huge(8, 0xFF);
  EXPECT_NE(error_of(huge).find("header size"), std::string::npos);
  EXPECT_NE(error_of(file_with("{\"a\":", {})).find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(file_with("[1,2]", {})).find("not a JSON object"), std::string::npos);
  EXPECT_NE(error_of(file_with(std::string(200, '[') + std::string(200, ']'), {})).find("nested too deeply"),
            std::string::npos);
}

TEST(SafeTensors, OffsetsPastTheEndOrInconsistent) {
  const std::vector<uint8_t> data(16);
  EXPECT_NE(error_of(file_with(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,400]}})", data)).find("outside"),
            std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[8,4]}})", data)).find("outside"),
            std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", data)).find("needs 12"),
            std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                               data))
                .find("overlap"),
            std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", data)).find("data_offsets"),
            std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[-1,15]}})", data)).find("offset"),
            std::string::npos);
}

TEST(SafeTensors, BadShapesAndDtypes) {
  const std::vector<uint8_t> data(16);
  EXPECT_NE(error_of(file_with(R"({"a":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}})", data))
                .find("unknown dtype 'Q4'"),
            std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", data)).find("shape"),
            std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"a":{"dtype":"F32","shape":[1,1,1,1,1,1,4],"data_offsets":[0,16]}})", data))
                .find("dimensions"),
            std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})",
                               data))
                .find("impossibly large"),
            std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", data), "a")
                .find("only floating-point"),
            std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", data)).find("dtype"), std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"a":7})", data)).find("not an object"), std::string::npos);
  EXPECT_NE(error_of(file_with(R"({"__metadata__":{"k":3}})", data)).find("not a string"), std::string::npos);
  EXPECT_NE(error_of(file_with("{}", data), "missing").find("no tensor named 'missing'"), std::string::npos);
}

TEST(SafeTensors, WriterRejectsDuplicatesAndIsAtomic) {
  EXPECT_THROW(encode_safetensors({{"a", Tensor::zeros({1}), {}, {}}, {"a", Tensor::zeros({1}), {}, {}}}), Error);
  TempDir dir;
  save_safetensors(dir.file("w.safetensors"), {{"a", Tensor::zeros({1}), {}, {}}});
  // Writing into a missing folder fails cleanly and leaves no temp file behind.
  EXPECT_THROW(save_safetensors(dir.file("nope/w.safetensors"), {{"a", Tensor::zeros({1}), {}, {}}}), Error);
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

}  // namespace
}  // namespace mf::test
