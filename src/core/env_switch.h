// Environment switches (METAFORMER_CUDA_DW=batch, METAFORMER_CUDA_ATTN_BWD=wmma, …): developer knobs
// that pick a kernel variant for an A/B on the device (docs/cuda.md, "Environment switches"). A value
// that named no variant used to select the default silently, so a typo measured the default under
// another name. env_choice says so on stderr, once per switch and value, however often it is read
// (METAFORMER_CUDA_ADAMW_COPIES is read every optimizer step, so that a test can switch it).
// Header-only: the kernels' standalone self-test (tools/device/cudak_selftest.sh) links no library.
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <set>
#include <string>

namespace mf {

// The index of `value` among the n choices, or -1.
inline int choice_index(const char* value, const char* const* choices, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (std::strcmp(value, choices[i]) == 0) return static_cast<int>(i);
  return -1;
}

// The index among the n `choices` of environment variable `name`'s value; -1 when it is unset or
// empty. A value that is none of them gives -1 too, so the caller's default runs, and prints one
// warning line naming the choices the first time that name=value is read.
inline int env_choice(const char* name, const char* const* choices, size_t n) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return -1;
  const int index = choice_index(value, choices, n);
  if (index >= 0) return index;
  static std::mutex mutex;
  static std::set<std::string> warned;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!warned.insert(std::string(name) + "=" + value).second) return -1;
  }
  std::string names;
  for (size_t i = 0; i < n; ++i) {
    if (!names.empty()) names.append(", ");
    names.append(choices[i]);
  }
  std::fprintf(stderr, "metaformer: warning: %s=%s is none of %s; the default runs\n", name, value, names.c_str());
  return -1;
}
inline int env_choice(const char* name, std::initializer_list<const char*> choices) {
  return env_choice(name, choices.begin(), choices.size());
}

// An in-process override of a switch (kernel benchmarks, bench/cuda_dev): `name` among the n choices
// sets `override_index`, null or "" clears it (-1: the environment's choice). False, and no change,
// for a name that is none of them.
inline bool set_switch_override(std::atomic<int>& override_index, const char* name, const char* const* choices,
                                size_t n) {
  const int v = name == nullptr || *name == '\0' ? -1 : choice_index(name, choices, n);
  if (v < 0 && name != nullptr && *name != '\0') return false;
  override_index.store(v);
  return true;
}

}  // namespace mf
