// Environment switches (METAFORMER_CUDA_DW=batch, METAFORMER_CUDA_ATTN_BWD=wmma, …): developer knobs
// that pick a kernel variant for an A/B on the device (docs/cuda.md, "Environment switches"). A value
// that named no variant used to select the default silently, so a typo measured the default under
// another name. env_choice says so on stderr, once per switch (callers read a switch once).
// Header-only: the kernels' standalone self-test (tools/device/cudak_selftest.sh) links no library.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

namespace mf {

// The index in `choices` of environment variable `name`'s value; -1 when it is unset or empty. A
// value that is none of them prints one warning line naming the choices and gives -1 too, so the
// caller's default runs.
inline int env_choice(const char* name, std::initializer_list<const char*> choices) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return -1;
  int index = 0;
  for (const char* c : choices) {
    if (std::strcmp(value, c) == 0) return index;
    ++index;
  }
  std::string names;
  for (const char* c : choices) {
    if (!names.empty()) names.append(", ");
    names.append(c);
  }
  std::fprintf(stderr, "metaformer: warning: %s=%s is none of %s; the default runs\n", name, value, names.c_str());
  return -1;
}

}  // namespace mf
