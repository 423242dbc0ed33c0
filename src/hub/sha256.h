// SHA-256 (FIPS 180-4), to check downloaded files against the hub's LFS ETag, which is the file's
// sha256. Written here rather than taken from OpenSSL, which the engine does not otherwise need.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace mf::hub {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  // The digest as 64 lowercase hex digits; the object is spent afterwards.
  std::string hex_digest();

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes hashed
};

std::string sha256_hex(const std::string& data);
// Of a file's whole content; throws mf::Error when it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace mf::hub
