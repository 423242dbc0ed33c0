// .npy: round trips, the dtypes and versions numpy writes, and every kind of malformed file.
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "io/npy.h"
#include "test_util.h"

namespace mf::test {
namespace {

std::vector<uint8_t> npy_with(const std::string& header, size_t data_bytes, uint8_t version = 1) {
  std::vector<uint8_t> b{0x93, 'N', 'U', 'M', 'P', 'Y', version, 0};
  const size_t n = header.size();
  b.push_back(static_cast<uint8_t>(n & 0xFF));
  b.push_back(static_cast<uint8_t>(n >> 8));
  if (version > 1) {
    b.push_back(0);
    b.push_back(0);
  }
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes, 0);
  return b;
}

std::string error_of(const std::vector<uint8_t>& bytes) {
  try {
    parse_npy(bytes, "x.npy");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Npy, RoundTrip) {
  TempDir dir;
  for (Shape s : {Shape{2, 3, 5, 7}, Shape{5}, Shape{}, Shape{0, 3}}) {
    Tensor t = random_tensor(s, 3);
    write_npy(dir.file("t.npy"), t);
    Tensor back = read_npy(dir.file("t.npy"));
    EXPECT_EQ(back.shape(), s);
    EXPECT_EQ(max_abs_diff(back, t), 0.0);
    // numpy aligns the data to 64 bytes.
    const auto bytes = read_bytes(dir.file("t.npy"));
    EXPECT_EQ((bytes.size() - static_cast<size_t>(t.numel()) * 4) % 64, 0u);
  }
}

TEST(Npy, FilesWrittenByNumpy) {
  // tools/golden/make_io_fixtures.py: numpy.save of arange-based arrays.
  Tensor f4 = read_npy(data_path("io/f4_2x3.npy"));
  ASSERT_EQ(f4.shape(), (Shape{2, 3}));
  EXPECT_EQ(f4.data()[5], 2.5f);
  Tensor f8 = read_npy(data_path("io/f8_4.npy"));
  ASSERT_EQ(f8.shape(), (Shape{4}));
  EXPECT_EQ(f8.data()[3], -1.5f);
  Tensor f2 = read_npy(data_path("io/f2_3.npy"));
  EXPECT_EQ(f2.data()[2], 0.25f);
  Tensor v2 = read_npy(data_path("io/f4_v2.npy"));
  EXPECT_EQ(v2.shape(), (Shape{1, 2, 2}));
  EXPECT_EQ(v2.data()[3], 3.f);
  Tensor scalar = read_npy(data_path("io/f4_scalar.npy"));
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.data()[0], 42.f);
}

TEST(Npy, MalformedFiles) {
  EXPECT_NE(error_of({1, 2, 3}).find("not a .npy file"), std::string::npos);
  EXPECT_NE(error_of(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 4)).find("needs 8"),
            std::string::npos);
  EXPECT_NE(error_of(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 12)).find("needs 8"),
            std::string::npos);
  EXPECT_NE(error_of(npy_with("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8)).find("Fortran"),
            std::string::npos);
  EXPECT_NE(error_of(npy_with("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8)).find("big-endian"),
            std::string::npos);
  EXPECT_NE(error_of(npy_with("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 16)).find("not supported"),
            std::string::npos);
  EXPECT_NE(error_of(npy_with("{'descr': '<f4', 'shape': (2,), }", 8)).find("lacks"), std::string::npos);
  EXPECT_NE(error_of(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }", 8)).find("shape"),
            std::string::npos);
  EXPECT_NE(error_of(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1), }", 4))
                .find("dimensions"),
            std::string::npos);
  EXPECT_NE(error_of(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) ", 8)).find("header"),
            std::string::npos);
  EXPECT_NE(error_of(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999,), }", 8))
                .find("large"),
            std::string::npos);
  std::vector<uint8_t> cut = npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8);
  cut[8] = 0xFF;  // header length past the end
  EXPECT_NE(error_of(cut).find("truncated"), std::string::npos);
  std::vector<uint8_t> v9 = npy_with("{}", 0);
  v9[6] = 9;
  EXPECT_NE(error_of(v9).find("version 9"), std::string::npos);
}

TEST(Npy, MissingFile) {
  try {
    read_npy("/nonexistent/x.npy");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open /nonexistent/x.npy"), std::string::npos);
  }
}

}  // namespace
}  // namespace mf::test
