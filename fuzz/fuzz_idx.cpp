// libFuzzer target: the IDX reader (raw and gzip-compressed), as Fashion-MNIST is read.
#include <cstdint>
#include <span>

#include "core/error.h"
#include "data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    // A small decompression limit keeps gzip bombs within libFuzzer's memory limit.
    const mf::IdxArray a = mf::parse_idx(std::span<const uint8_t>(data, size), "fuzz", size_t{1} << 24);
    uint64_t numel = 1;
    for (int64_t d : a.dims) numel *= static_cast<uint64_t>(d);
    if (numel != a.data.size()) __builtin_trap();
  } catch (const mf::Error&) {
  }
  return 0;
}
