// libFuzzer target: the .npy reader. Only mf::Error may escape it; whatever parses must survive a
// write/read round trip bit for bit (NaN payloads included: both directions copy float32 bytes).
#include <cstdint>
#include <cstring>
#include <span>

#include "core/error.h"
#include "io/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mf::Tensor t;
  try {
    t = mf::parse_npy(std::span<const uint8_t>(data, size), "fuzz");
  } catch (const mf::Error&) {
    return 0;
  }
  // Not inside the try: failing to write back or re-read what was read is a bug.
  const std::vector<uint8_t> again = mf::encode_npy(t);
  if (again.size() % 64 != (static_cast<size_t>(t.numel()) * 4) % 64) __builtin_trap();  // data 64-aligned
  const mf::Tensor back = mf::parse_npy(again, "fuzz-roundtrip");
  if (back.shape() != t.shape()) __builtin_trap();
  if (t.numel() && std::memcmp(back.data(), t.data(), static_cast<size_t>(t.numel()) * 4) != 0) __builtin_trap();
  return 0;
}
