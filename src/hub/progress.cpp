#include "hub/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace mf::hub {

ProgressBar::ProgressBar(std::string label, int64_t total_bytes, bool wanted)
    : label_(std::move(label)), total_(total_bytes), enabled_(wanted && ::isatty(STDERR_FILENO)) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int64_t bytes) {
  if (!enabled_) return;
  // Redrawn when the shown value changes (tenths of a percent, or whole MB without a known size).
  const int permille = total_ > 0 ? static_cast<int>(1000 * bytes / total_) : static_cast<int>(bytes >> 20);
  if (permille == last_permille_) return;
  last_permille_ = permille;
  const double mb = static_cast<double>(bytes) / (1 << 20);
  if (total_ > 0) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(static_cast<int64_t>(kWidth) * bytes / total_);
    fmt::print(stderr, "\r{} [{}{}] {:5.1f}% {:.1f}/{:.1f} MB", label_, std::string(static_cast<size_t>(filled), '#'),
               std::string(static_cast<size_t>(kWidth - filled), '.'), permille / 10.0, mb,
               static_cast<double>(total_) / (1 << 20));
  } else {
    fmt::print(stderr, "\r{} {:.1f} MB", label_, mb);
  }
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (drawn_) fmt::print(stderr, "\n");
  drawn_ = false;
}

}  // namespace mf::hub
