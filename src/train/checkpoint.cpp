#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"
#include "io/file.h"

namespace mf {

namespace fs = std::filesystem;

namespace {

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Test hook: MF_DEBUG_KILL_IN_CHECKPOINT=N kills the process with SIGKILL while checkpoint N is
// half written (its files are in place, the folder not yet renamed), to test that nothing is lost.
void maybe_die_mid_checkpoint(int epoch) {
  const char* v = std::getenv("MF_DEBUG_KILL_IN_CHECKPOINT");
  if (v && std::atoi(v) == epoch) std::raise(SIGKILL);
}

}  // namespace

std::string write_checkpoint(const std::string& run_dir, int epoch, const CheckpointFiles& files, int keep) {
  const std::string root = run_dir + "/checkpoints";
  fs::create_directories(root);
  const std::string name = fmt::format("epoch-{:04d}", epoch);
  const std::string tmp = root + "/" + name + ".tmp", dir = root + "/" + name;
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  save_safetensors(tmp + "/model.safetensors", files.model, files.metadata);
  if (!files.model_ema.empty()) save_safetensors(tmp + "/model_ema.safetensors", files.model_ema, files.metadata);
  save_safetensors(tmp + "/train_state.safetensors", files.state, files.metadata);
  fsync_dir(tmp);
  maybe_die_mid_checkpoint(epoch);
  fs::remove_all(dir, ec);  // a re-run of the same epoch after a resume
  fs::rename(tmp, dir, ec);
  MF_CHECK(!ec, "cannot finish checkpoint {}: {}", dir, ec.message());
  fsync_dir(root);
  const std::string latest = name + "\n";
  write_file_atomic(root + "/latest", {reinterpret_cast<const uint8_t*>(latest.data()), latest.size()});

  // Keep the newest `keep` complete checkpoints; leftovers of interrupted writes go too.
  std::vector<std::string> done;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (!e.is_directory()) continue;
    if (n.size() > 4 && n.substr(n.size() - 4) == ".tmp") fs::remove_all(e.path(), ec);
    else if (n.rfind("epoch-", 0) == 0) done.push_back(n);
  }
  std::sort(done.begin(), done.end());
  for (size_t i = 0; i + static_cast<size_t>(std::max(keep, 1)) < done.size(); ++i)
    if (done[i] != name) fs::remove_all(root + "/" + done[i], ec);
  return dir;
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  const std::string root = run_dir + "/checkpoints";
  std::ifstream f(root + "/latest");
  if (!f) return std::nullopt;
  std::string name;
  f >> name;
  MF_CHECK(!name.empty() && name.find('/') == std::string::npos && fs::is_directory(root + "/" + name),
           "{}/latest names a missing checkpoint '{}'", root, name);
  return root + "/" + name;
}

}  // namespace mf
