// libFuzzer target: the JSON model description parser. Whatever parses must serialise and parse
// back to the same description.
#include <cstdint>
#include <string>

#include "core/error.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  mf::MetaFormerConfig c;
  try {
    c = mf::parse_config(text, "fuzz");
  } catch (const mf::Error&) {
    return 0;
  }
  const std::string again = mf::config_to_json(c).dump();
  mf::MetaFormerConfig back;
  try {
    back = mf::parse_config(again, "fuzz-roundtrip");
  } catch (const mf::Error&) {
    __builtin_trap();
  }
  if (!(back == c)) __builtin_trap();
  return 0;
}
