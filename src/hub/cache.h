// The Hugging Face hub's cache layout, exactly as huggingface_hub writes it, so that each reuses the
// other's files (docs/hub.md):
//   <cache>/models--<owner>--<name>/blobs/<etag>                       the file's bytes (etag = sha256 for LFS)
//   <cache>/models--<owner>--<name>/snapshots/<commit>/<file>          -> ../../blobs/<etag> (relative symlink)
//   <cache>/models--<owner>--<name>/refs/<revision>                    the commit the revision pointed to
//   <cache>/.locks/models--<owner>--<name>/<etag>.lock                 held while the blob is written
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace mf::hub {

// $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
std::filesystem::path hub_cache_dir();
// HF_HUB_OFFLINE set to 1, ON, YES or TRUE (any case), as huggingface_hub reads it.
bool hub_offline();
// HF_HUB_DISABLE_PROGRESS_BARS set to a true value (as for HF_HUB_OFFLINE).
bool hub_progress_disabled();
// HF_ENDPOINT without a trailing slash, or https://huggingface.co.
std::string hub_endpoint();
// A 40-hex-digit git commit hash (a revision that names a snapshot directly).
bool is_commit_hash(const std::string& revision);

class RepoCache {
 public:
  RepoCache(std::filesystem::path cache_dir, const std::string& repo_id);

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path blob(const std::string& etag) const { return root_ / "blobs" / etag; }
  std::filesystem::path incomplete(const std::string& etag) const { return root_ / "blobs" / (etag + ".incomplete"); }
  std::filesystem::path snapshot_file(const std::string& commit, const std::string& filename) const {
    return root_ / "snapshots" / commit / filename;
  }
  std::filesystem::path ref(const std::string& revision) const { return root_ / "refs" / revision; }
  std::filesystem::path lock_file(const std::string& etag) const;

  // The cached file of `revision` (a branch or tag resolved through refs/, or a commit hash), or none
  // when it is not (completely) in the cache.
  std::optional<std::filesystem::path> find(const std::string& revision, const std::string& filename) const;

  // Records a verified blob: the snapshot's relative symlink to it and refs/<revision> (each replaced
  // atomically). Returns the snapshot path.
  std::filesystem::path link(const std::string& revision, const std::string& commit, const std::string& etag,
                             const std::string& filename) const;

 private:
  std::filesystem::path cache_dir_, root_;
  std::string folder_;  // models--owner--name
};

// An exclusive flock(2) on a lock file, as huggingface_hub's filelock takes it, so that two processes
// (of either program) never write the same blob at once. Released by the destructor.
class FileLock {
 public:
  explicit FileLock(const std::filesystem::path& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace mf::hub
