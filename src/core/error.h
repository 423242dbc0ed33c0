// Errors: every failure a user can cause (bad file, bad flag, wrong shape) is thrown as mf::Error with
// one self-contained line of text; the CLI prints it and exits non-zero. Internal invariants use
// MF_ASSERT, which also throws (never aborts) so that fuzzers and tests see a clean failure.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace mf {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace mf

// Checks a condition that depends on user input; the message is a fmt format string.
#define MF_CHECK(cond, ...)        \
  do {                             \
    if (!(cond)) ::mf::fail(__VA_ARGS__); \
  } while (0)

// Checks an internal invariant (a bug if it fails, not a user error).
#define MF_ASSERT(cond)                                                                   \
  do {                                                                                    \
    if (!(cond)) ::mf::fail("internal error: {} ({}:{})", #cond, __FILE__, __LINE__);     \
  } while (0)
