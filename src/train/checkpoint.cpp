#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"
#include "io/file.h"

namespace mf {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kManifest = "manifest.json";
constexpr int kManifestFormat = 1;

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

// Test hook: MF_DEBUG_FAIL_IN_CHECKPOINT=N makes checkpoint N fail as a full disk would, after its
// first file is written, to test that a failed write leaves no .tmp folder and no metrics row.
void maybe_fail_mid_checkpoint(int epoch, const std::string& path) {
  const char* v = std::getenv("MF_DEBUG_FAIL_IN_CHECKPOINT");
  if (v && std::atoi(v) == epoch) fail("cannot write {}: write failed: {} (simulated)", path, std::strerror(ENOSPC));
}

std::string write_checkpoint_files(const std::string& tmp, int epoch, const CheckpointFiles& files) {
  json manifest{{"format", kManifestFormat}, {"epoch", epoch}, {"files", json::object()}, {"record", files.record}};
  if (!files.metrics_row.is_null()) manifest["metrics_row"] = files.metrics_row;
  auto put = [&](const std::string& name, const std::vector<SafeTensorEntry>& entries) {
    const std::vector<uint8_t> bytes = encode_safetensors(entries, files.metadata);
    write_file_atomic(tmp + "/" + name, bytes);
    manifest["files"][name] = {{"bytes", bytes.size()}, {"crc32", crc32_of(bytes)}};
  };
  put("model.safetensors", files.model);
  maybe_fail_mid_checkpoint(epoch, tmp + "/model_ema.safetensors");
  if (!files.model_ema.empty()) put("model_ema.safetensors", files.model_ema);
  put("train_state.safetensors", files.state);
  // Written last: a folder with a manifest has all its files.
  write_text(tmp + "/" + kManifest, manifest.dump(1) + "\n");
  return tmp;
}

}  // namespace

uint32_t crc32_of(const std::vector<uint8_t>& bytes) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  // zlib takes the length as a uInt: feed it in pieces so that files over 4 GiB are covered too.
  size_t done = 0;
  while (done < bytes.size()) {
    const size_t n = std::min<size_t>(bytes.size() - done, size_t{1} << 30);
    crc = ::crc32(crc, bytes.data() + done, static_cast<uInt>(n));
    done += n;
  }
  return static_cast<uint32_t>(crc);
}

std::string write_checkpoint(const std::string& run_dir, int epoch, const CheckpointFiles& files, int keep) {
  const std::string root = run_dir + "/checkpoints";
  const std::string name = fmt::format("epoch-{:04d}", epoch);
  const std::string tmp = root + "/" + name + ".tmp", dir = root + "/" + name;
  std::error_code ec;
  fs::create_directories(root, ec);
  MF_CHECK(!ec, "cannot create {}: {}", root, ec.message());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  MF_CHECK(!ec, "cannot create {}: {}", tmp, ec.message());
  try {
    write_checkpoint_files(tmp, epoch, files);
    fsync_dir(tmp);
    maybe_die_mid_checkpoint(epoch);
    fs::remove_all(dir, ec);  // a re-run of the same epoch after a resume
    fs::rename(tmp, dir, ec);
    MF_CHECK(!ec, "cannot finish checkpoint {}: {}", dir, ec.message());
  } catch (...) {
    // A half-written checkpoint is of no use to anyone; leave the folder as it was before.
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw;
  }
  fsync_dir(root);
  const std::string latest = name + "\n";
  write_file_atomic(root + "/latest", {reinterpret_cast<const uint8_t*>(latest.data()), latest.size()});

  // Keep the newest `keep` complete checkpoints; leftovers of interrupted writes go too.
  std::vector<std::string> done;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (!e.is_directory(ec)) continue;
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

int checkpoint_folder_epoch(const std::string& dir) {
  const std::string n = fs::path(dir).filename().string();
  if (n.size() != 10 || n.rfind("epoch-", 0) != 0) return -1;
  int v = 0;
  for (size_t i = 6; i < n.size(); ++i) {
    if (n[i] < '0' || n[i] > '9') return -1;
    v = v * 10 + (n[i] - '0');
  }
  return v;
}

std::vector<std::string> checkpoint_candidates(const std::string& run_dir) {
  const std::string root = run_dir + "/checkpoints";
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  // `latest` may name a checkpoint that is gone (or be damaged itself): the folders still count.
  std::string latest;
  if (std::ifstream f(root + "/latest"); f) f >> latest;
  std::vector<std::pair<int, std::string>> found;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string p = e.path().string();
    const int epoch = checkpoint_folder_epoch(p);
    if (epoch >= 0 && e.is_directory(ec)) found.emplace_back(epoch, p);
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [epoch, p] : found)
    if (fs::path(p).filename() == latest) out.push_back(p);
  for (const auto& [epoch, p] : found)
    if (fs::path(p).filename() != latest) out.push_back(p);
  return out;
}

std::optional<json> verify_checkpoint_files(const std::string& dir) {
  const std::string mpath = dir + "/" + kManifest;
  if (!fs::exists(mpath)) return std::nullopt;
  const auto text = read_file(mpath);
  json m = json::parse(text.begin(), text.end(), nullptr, false);
  MF_CHECK(!m.is_discarded() && m.is_object() && m.contains("files") && m["files"].is_object() &&
               m.value("format", 0) == kManifestFormat,
           "{} is damaged (not a manifest this version reads)", mpath);
  MF_CHECK(m["files"].contains("model.safetensors") && m["files"].contains("train_state.safetensors"),
           "{} lists no model or training state", mpath);
  for (const auto& [name, want] : m["files"].items()) {
    MF_CHECK(name.find('/') == std::string::npos && want.is_object(), "{} is damaged (entry '{}')", mpath, name);
    const std::string path = dir + "/" + name;
    MF_CHECK(fs::exists(path), "{} is missing", path);
    const std::vector<uint8_t> bytes = read_file(path);
    MF_CHECK(bytes.size() == want.value("bytes", uint64_t{0}), "{} is damaged: {} bytes, the manifest says {}", path,
             bytes.size(), want.value("bytes", uint64_t{0}));
    const uint32_t crc = crc32_of(bytes);
    MF_CHECK(crc == want.value("crc32", uint32_t{0}),
             "{} is damaged or was edited: its CRC-32 is {:08x}, the manifest says {:08x}", path, crc,
             want.value("crc32", uint32_t{0}));
  }
  return m;
}

void check_all_finite(const SafeTensors& file) {
  for (const std::string& name : file.names()) {
    const std::string& dtype = file.info(name).dtype;
    if (dtype != "F32" && dtype != "F16" && dtype != "BF16" && dtype != "F64") continue;
    const Tensor t = file.load(name);
    const float* p = t.data();
    for (int64_t i = 0; i < t.numel(); ++i)
      MF_CHECK(std::isfinite(p[i]), "{}: tensor '{}' holds {} at element {}", file.what(), name, p[i], i);
  }
}

std::string first_json_difference(const json& recorded, const json& now, const std::string& path) {
  if (recorded.is_object() && now.is_object()) {
    for (const auto& [k, v] : recorded.items()) {
      const std::string p = path.empty() ? k : path + "." + k;
      if (!now.contains(k)) return fmt::format("{}: {} recorded, absent now", p, v.dump());
      if (std::string d = first_json_difference(v, now.at(k), p); !d.empty()) return d;
    }
    for (const auto& [k, v] : now.items())
      if (!recorded.contains(k))
        return fmt::format("{}: absent in the record, {} now", path.empty() ? k : path + "." + k, v.dump());
    return "";
  }
  if (recorded.is_array() && now.is_array() && recorded.size() == now.size()) {
    for (size_t i = 0; i < recorded.size(); ++i)
      if (std::string d = first_json_difference(recorded[i], now[i], fmt::format("{}[{}]", path, i)); !d.empty())
        return d;
    return "";
  }
  // Numbers compare by value: 1 and 1.0 are the same setting.
  if (recorded.is_number() && now.is_number() && recorded.get<double>() == now.get<double>()) return "";
  if (recorded == now) return "";
  return fmt::format("{}: {} recorded, {} now", path.empty() ? "(value)" : path, recorded.dump(), now.dump());
}

}  // namespace mf
