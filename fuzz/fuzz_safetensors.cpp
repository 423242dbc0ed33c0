// libFuzzer target: the safetensors reader. Whatever parses must load tensor by tensor without
// reading outside the input, and whatever loads must survive a write/read round trip.
#include <cstdint>
#include <cstring>
#include <span>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mf::SafeTensors st;
  try {
    st = mf::SafeTensors::parse(std::span<const uint8_t>(data, size), nullptr, "fuzz");
  } catch (const mf::Error&) {
    return 0;
  }
  std::vector<mf::SafeTensorEntry> loaded;
  for (const auto& name : st.names()) {
    try {
      loaded.push_back({name, st.load(name), {}, {}});
    } catch (const mf::Error&) {
      try {
        auto ints = st.load_int(name);
        loaded.push_back({name, {}, ints, st.info(name).shape});
      } catch (const mf::Error&) {
      }
    }
  }
  const std::vector<uint8_t> again = mf::encode_safetensors(loaded, st.metadata());
  mf::SafeTensors back = mf::SafeTensors::parse(again, nullptr, "fuzz-roundtrip");
  if (back.names().size() != loaded.size()) __builtin_trap();
  for (const auto& e : loaded) {
    if (!e.tensor.defined()) continue;
    const mf::Tensor t = back.load(e.name);
    if (t.numel() && std::memcmp(t.data(), e.tensor.data(), static_cast<size_t>(t.numel()) * 4) != 0) __builtin_trap();
  }
  return 0;
}
