// IDX files (the MNIST / Fashion-MNIST format), optionally gzip-compressed: a big-endian header
// (two zero bytes, a type code, the number of dimensions, then each dimension as uint32) followed by
// the data. Only unsigned-byte data (type 0x08) is accepted, as the MNIST family uses.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace mf {

struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;  // row-major, numel(dims) bytes
};

// Decompresses gzip data (RFC 1952), refusing output larger than `max_bytes`.
std::vector<uint8_t> gunzip(std::span<const uint8_t> bytes, const std::string& what, size_t max_bytes);

// Parses raw or gzip-compressed IDX bytes, of at most `max_bytes` once decompressed. Malformed,
// truncated or oversized input: mf::Error naming `what`.
IdxArray parse_idx(std::span<const uint8_t> bytes, const std::string& what, size_t max_bytes = size_t{1} << 31);
IdxArray read_idx(const std::string& path);

}  // namespace mf
