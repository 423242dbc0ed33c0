// NumPy .npy files (format versions 1.0, 2.0 and 3.0). Reading accepts little-endian float32,
// float64 and float16 arrays in C order and returns float32; writing produces '<f4' version 1.0.
// Malformed input (bad magic, truncated header or data, Fortran order, unknown dtype, a shape that
// does not match the data size) is rejected with one line naming the file and the problem.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mf {

Tensor read_npy(const std::string& path);
Tensor parse_npy(std::span<const uint8_t> bytes, const std::string& what);

std::vector<uint8_t> encode_npy(const Tensor& t);
void write_npy(const std::string& path, const Tensor& t);  // atomic

}  // namespace mf
