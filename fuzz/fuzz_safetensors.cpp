// libFuzzer target: the safetensors reader. Whatever parses must load tensor by tensor without reading
// outside the input (ASan checks that), and whatever loads must survive a write/read round trip with
// the same names, shapes, values and metadata. Only mf::Error may escape the reader; anything else
// (another exception, a crash, a sanitizer report, a failed round trip) is a finding.
#include <cstdint>
#include <cstring>
#include <span>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mf::SafeTensors st;
  try {
    // No owner: the bytes outlive this call, and so does everything that reads them.
    st = mf::SafeTensors::parse(std::span<const uint8_t>(data, size), nullptr, "fuzz");
  } catch (const mf::Error&) {
    return 0;
  }
  std::vector<mf::SafeTensorEntry> loaded;
  for (const auto& name : st.names()) {
    const mf::SafeTensorInfo& info = st.info(name);
    if (info.end < info.begin || info.end - info.begin > size) __builtin_trap();
    try {
      loaded.push_back({name, st.load(name), {}, {}});
      continue;
    } catch (const mf::Error&) {
    }
    try {
      loaded.push_back({name, {}, st.load_int(name), info.shape});
    } catch (const mf::Error&) {
    }
  }
  // Re-encoding what loaded must work: a reader/writer mismatch (a name or metadata string the reader
  // accepts but the writer rejects) is a bug, so mf::Error is not caught here.
  const std::vector<uint8_t> again = mf::encode_safetensors(loaded, st.metadata());
  const mf::SafeTensors back = mf::SafeTensors::parse(again, nullptr, "fuzz-roundtrip");
  if (back.names().size() != loaded.size() || back.metadata() != st.metadata()) __builtin_trap();
  for (const auto& e : loaded) {
    if (e.tensor.defined()) {
      const mf::Tensor t = back.load(e.name);
      if (t.shape() != e.tensor.shape()) __builtin_trap();
      if (t.numel() && std::memcmp(t.data(), e.tensor.data(), static_cast<size_t>(t.numel()) * 4) != 0)
        __builtin_trap();
    } else {
      if (back.info(e.name).shape != e.int_shape || back.load_int(e.name) != e.ints) __builtin_trap();
    }
  }
  return 0;
}
