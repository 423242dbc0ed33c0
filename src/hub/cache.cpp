#include "hub/cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace mf::hub {

namespace fs = std::filesystem;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// Writes `text` to `path` through a temporary file and rename(2): readers see the old or the new
// content, never a partial one.
void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    MF_CHECK(f.good(), "{}: cannot write ({})", tmp.string(), std::strerror(errno));
    f << text;
    f.close();
    MF_CHECK(!f.fail(), "{}: cannot write ({})", tmp.string(), std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fs::remove(tmp, ec);
  MF_CHECK(!ec, "{}: cannot write ({})", path.string(), ec.message());
}

}  // namespace

fs::path hub_cache_dir() {
  if (std::string v = env("HF_HUB_CACHE"); !v.empty()) return v;
  if (std::string v = env("HF_HOME"); !v.empty()) return fs::path(v) / "hub";
  if (std::string v = env("XDG_CACHE_HOME"); !v.empty()) return fs::path(v) / "huggingface" / "hub";
  const std::string home = env("HOME");
  MF_CHECK(!home.empty(), "no cache folder for the Hugging Face hub: set HF_HUB_CACHE, HF_HOME or HOME");
  return fs::path(home) / ".cache" / "huggingface" / "hub";
}

namespace {

// huggingface_hub's reading of boolean variables.
bool env_true(const char* name) {
  std::string v = env(name);
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return v == "1" || v == "ON" || v == "YES" || v == "TRUE";
}

}  // namespace

bool hub_offline() { return env_true("HF_HUB_OFFLINE"); }
bool hub_progress_disabled() { return env_true("HF_HUB_DISABLE_PROGRESS_BARS"); }

std::string hub_endpoint() {
  std::string v = env("HF_ENDPOINT");
  if (v.empty()) return "https://huggingface.co";
  while (!v.empty() && v.back() == '/') v.pop_back();
  return v;
}

bool is_commit_hash(const std::string& r) {
  return r.size() == 40 && std::all_of(r.begin(), r.end(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
         });
}

RepoCache::RepoCache(fs::path cache_dir, const std::string& repo_id) : cache_dir_(std::move(cache_dir)) {
  folder_ = "models--" + repo_id;
  for (size_t pos = 0; (pos = folder_.find('/', pos)) != std::string::npos;) folder_.replace(pos, 1, "--");
  root_ = cache_dir_ / folder_;
}

fs::path RepoCache::lock_file(const std::string& etag) const { return cache_dir_ / ".locks" / folder_ / (etag + ".lock"); }

std::optional<fs::path> RepoCache::find(const std::string& revision, const std::string& filename) const {
  std::string commit = revision;
  if (!is_commit_hash(revision)) {
    std::ifstream f(ref(revision));
    if (!f || !(f >> commit) || !is_commit_hash(commit)) return std::nullopt;
  }
  const fs::path file = snapshot_file(commit, filename);
  std::error_code ec;
  // exists() follows the symlink: a snapshot entry whose blob is gone does not count.
  if (!fs::exists(file, ec) || !fs::is_regular_file(file, ec)) return std::nullopt;
  return file;
}

fs::path RepoCache::link(const std::string& revision, const std::string& commit, const std::string& etag,
                         const std::string& filename) const {
  const fs::path target = snapshot_file(commit, filename);
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  MF_CHECK(!ec, "{}: cannot create ({})", target.parent_path().string(), ec.message());
  // Lexical, so that symlinks above the cache folder do not change the link: ../../blobs/<etag>.
  const fs::path relative = blob(etag).lexically_relative(target.parent_path());
  const fs::path tmp = target.string() + ".tmp" + std::to_string(::getpid());
  fs::remove(tmp, ec);
  fs::create_symlink(relative, tmp, ec);
  MF_CHECK(!ec, "{}: cannot create the snapshot link ({})", target.string(), ec.message());
  fs::rename(tmp, target, ec);
  if (ec) fs::remove(tmp, ec);
  MF_CHECK(!ec, "{}: cannot create the snapshot link ({})", target.string(), ec.message());
  if (revision != commit) {
    fs::create_directories(ref(revision).parent_path(), ec);
    MF_CHECK(!ec, "{}: cannot create ({})", ref(revision).parent_path().string(), ec.message());
    write_atomically(ref(revision), commit);  // no newline, as huggingface_hub writes it
  }
  return target;
}

FileLock::FileLock(const fs::path& path) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  MF_CHECK(fd_ >= 0, "{}: cannot open the lock file ({})", path.string(), std::strerror(errno));
  while (::flock(fd_, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    const int e = errno;
    ::close(fd_);
    fail("{}: cannot lock ({})", path.string(), std::strerror(e));
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

}  // namespace mf::hub
