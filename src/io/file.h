// File access shared by every reader and writer: memory mapping for large read-only inputs
// (weights), whole-file reads for small ones, and atomic writes (temp file in the same folder,
// fsync, rename) so that a crash at any instant leaves either the old file or the new one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace mf {

class MappedFile {
 public:
  // Throws mf::Error ("cannot open FILE: reason") on failure. An empty file maps to size 0.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

std::vector<uint8_t> read_file(const std::string& path);

// Writes `bytes` to `path` atomically: PATH.tmp.<pid> is written and fsync'ed, then renamed over
// PATH, then the folder is fsync'ed.
void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);
inline void write_text(const std::string& path, const std::string& text) {
  write_file_atomic(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

}  // namespace mf
