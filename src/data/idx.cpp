#include "data/idx.h"

#include <zlib.h>

#include <cstring>

#include "core/error.h"
#include "io/file.h"

namespace mf {

std::vector<uint8_t> gunzip(std::span<const uint8_t> bytes, const std::string& what, size_t max_bytes) {
  z_stream zs{};
  // 16 + MAX_WBITS: expect a gzip header and trailer (checksum verified by zlib).
  MF_CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, "{}: cannot initialise zlib", what);
  std::vector<uint8_t> out;
  zs.next_in = const_cast<Bytef*>(bytes.data());
  zs.avail_in = static_cast<uInt>(bytes.size());
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    const size_t have = out.size();
    if (have >= max_bytes) {
      inflateEnd(&zs);
      fail("{}: decompresses to more than {} bytes", what, max_bytes);
    }
    out.resize(std::min(max_bytes, std::max<size_t>(have * 2, 1 << 16)));
    zs.next_out = out.data() + have;
    zs.avail_out = static_cast<uInt>(out.size() - have);
    rc = inflate(&zs, Z_NO_FLUSH);
    out.resize(out.size() - zs.avail_out);
    if (rc == Z_STREAM_END) break;
    if (rc != Z_OK || (zs.avail_in == 0 && zs.avail_out != 0)) {
      inflateEnd(&zs);
      fail("{}: corrupt or truncated gzip data", what);
    }
  }
  const bool trailing = zs.avail_in != 0;
  inflateEnd(&zs);
  MF_CHECK(!trailing, "{}: unexpected bytes after the gzip stream", what);
  return out;
}

IdxArray parse_idx(std::span<const uint8_t> bytes, const std::string& what, size_t max_bytes) {
  std::vector<uint8_t> inflated;
  if (bytes.size() >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B) {
    inflated = gunzip(bytes, what, max_bytes);
    bytes = inflated;
  }
  MF_CHECK(bytes.size() >= 4, "{}: not an IDX file (too short)", what);
  MF_CHECK(bytes[0] == 0 && bytes[1] == 0, "{}: not an IDX file (bad magic)", what);
  MF_CHECK(bytes[2] == 0x08, "{}: IDX data type 0x{:02x} is not supported (unsigned bytes only)", what, bytes[2]);
  const int ndim = bytes[3];
  MF_CHECK(ndim >= 1 && ndim <= 4, "{}: IDX file has {} dimensions", what, ndim);
  MF_CHECK(bytes.size() >= 4 + 4 * static_cast<size_t>(ndim), "{}: truncated IDX header", what);
  IdxArray a;
  uint64_t numel = 1;
  for (int i = 0; i < ndim; ++i) {
    const uint8_t* p = bytes.data() + 4 + 4 * i;
    const uint64_t d = (uint64_t{p[0]} << 24) | (uint64_t{p[1]} << 16) | (uint64_t{p[2]} << 8) | p[3];
    numel *= d;
    MF_CHECK(numel <= max_bytes, "{}: IDX array is impossibly large", what);
    a.dims.push_back(static_cast<int64_t>(d));
  }
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  const size_t have = bytes.size() - header;
  MF_CHECK(have == numel, "{}: IDX data has {} bytes but the header promises {}{}", what, have, numel,
           have < numel ? " (truncated file)" : "");
  a.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return a;
}

IdxArray read_idx(const std::string& path) {
  auto f = MappedFile::open(path);
  return parse_idx(f->bytes(), path);
}

}  // namespace mf
