// safetensors (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
// N bytes of JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the data section. F32, F16 and BF16 tensors load as float32.
//
// Every malformed file is rejected with one line naming the file and the problem (truncated file,
// header past the end, offsets past the end or overlapping, size not matching dtype x shape, unknown
// dtype, bad JSON); nothing is read outside the file's bytes.
//
// A file is read with pread, one tensor at a time, never memory-mapped: a file truncated by another
// process while it loads (a concurrent save, a full disk) then ends in an error naming the tensor
// rather than in SIGBUS, and only the tensor being copied is held twice (no mapped pages add to
// the resident size).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mf {

struct SafeTensorInfo {
  std::string name;
  std::string dtype;  // as written in the file: "F32", "F16", "BF16", "I64", ...
  Shape shape;
  size_t begin = 0;   // byte offsets into the data section
  size_t end = 0;
};

class SafeTensors {
 public:
  // Reads and validates `path`'s header; tensors are read from the open file when loaded.
  static SafeTensors open(const std::string& path);
  // Validates an in-memory file image; `owner` keeps `bytes` alive. `what` names it in errors.
  static SafeTensors parse(std::span<const uint8_t> bytes, std::shared_ptr<void> owner, const std::string& what);

  // Tensor names in file order of their data offsets.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const SafeTensorInfo& info(const std::string& name) const;  // throws if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& what() const { return what_; }

  // Loads a floating-point tensor (F32, F16, BF16) as float32. Throws for other dtypes.
  Tensor load(const std::string& name) const;
  // Loads an integer tensor (I64, I32, U8, ...) widened to int64.
  std::vector<int64_t> load_int(const std::string& name) const;

 private:
  // Validates the header (`head`: the length and the JSON) of a file whose data section has
  // `data_size` bytes.
  static SafeTensors parse_header(std::span<const uint8_t> head, uint64_t data_size, const std::string& what);
  // Copies bytes [begin, begin + n) of the data section to `dst`; mf::Error when they are gone.
  void read_data(size_t begin, size_t n, uint8_t* dst, const std::string& tensor) const;

  std::shared_ptr<void> owner_;
  std::span<const uint8_t> data_;  // the data section of an in-memory file
  std::shared_ptr<const int> fd_;  // or the open file, its data section starting at data_offset_
  uint64_t data_offset_ = 0;
  std::string what_;
  std::vector<std::string> names_;
  std::map<std::string, SafeTensorInfo> index_;
  std::map<std::string, std::string> metadata_;
};

// One entry of a file to write. Float tensors are written as F32; integer arrays as I64.
struct SafeTensorEntry {
  std::string name;
  Tensor tensor;                 // used when defined
  std::vector<int64_t> ints;     // otherwise: an I64 tensor of shape `int_shape`
  Shape int_shape;
};

// Serialises entries (in the given order) to a safetensors file image.
std::vector<uint8_t> encode_safetensors(const std::vector<SafeTensorEntry>& entries,
                                        const std::map<std::string, std::string>& metadata = {});
// Writes atomically (see write_file_atomic).
void save_safetensors(const std::string& path, const std::vector<SafeTensorEntry>& entries,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace mf
