// A one-line download progress bar on stderr, drawn only when stderr is a terminal (logs and pipes
// stay clean) and the caller asked for it.
#pragma once

#include <cstdint>
#include <string>

namespace mf::hub {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total_bytes, bool wanted);
  ~ProgressBar();
  void update(int64_t bytes);
  void finish();  // ends the line

 private:
  std::string label_;
  int64_t total_;
  bool enabled_;
  int last_permille_ = -1;
  bool drawn_ = false;
};

}  // namespace mf::hub
