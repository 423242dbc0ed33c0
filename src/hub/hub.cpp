// fetch_pretrained: the cache first (no request when the file is there), else one HEAD for the
// metadata and a resumable GET into blobs/<etag>.incomplete, verified against the sha256 before it is
// renamed into place (docs/hub.md).
#include "hub/hub.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "core/error.h"
#include "hub/cache.h"
#include "hub/http.h"
#include "hub/progress.h"
#include "hub/sha256.h"
#include "model/pretrained.h"
#include "model/zoo.h"

namespace mf::hub {

namespace fs = std::filesystem;

namespace {

// Retries of one download that stopped midway but made progress; each resumes with a Range request.
constexpr int kMaxResumes = 10;

bool is_sha256(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
         });
}

// An ETag or commit used as a file name: nothing that could leave the cache folder.
bool is_safe_name(const std::string& s) {
  return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
         });
}

int64_t size_of(const fs::path& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

std::string token() {
  const char* t = std::getenv("HF_TOKEN");
  return t ? std::string(t) : std::string();
}

void check_metadata(const std::string& repo, const std::string& endpoint, const FileMetadata& m) {
  MF_CHECK(m.status != 0, "{}: cannot reach {} ({}); check the network connection, or set HF_HUB_OFFLINE=1 to use "
           "only files already in the cache", repo, endpoint, m.error);
  if (m.error_code == "RepoNotFound" || (m.status == 404 && m.error_code.empty()))
    fail("{}: not found on {} (HTTP {}): no such model or pretrained tag on the hub", repo, endpoint, m.status);
  MF_CHECK(m.status != 404, "{}: has no {} at this revision on {} (HTTP 404, {})", repo, kWeightsFile, endpoint,
           m.error_code);
  if (m.status == 401 || m.status == 403)
    fail("{}: access denied by {} (HTTP {}); {}", repo, endpoint, m.status,
         token().empty() ? "a private or gated repository needs an access token in HF_TOKEN"
                         : "the token in HF_TOKEN was not accepted for it");
  MF_CHECK(m.status >= 200 && m.status < 400, "{}: {} answered HTTP {}", repo, endpoint, m.status);
  MF_CHECK(is_safe_name(m.commit), "{}: {} sent no usable X-Repo-Commit header (is HF_ENDPOINT a Hugging Face hub?)",
           repo, endpoint);
  MF_CHECK(is_safe_name(m.etag), "{}: {} sent no usable ETag header (is HF_ENDPOINT a Hugging Face hub?)", repo,
           endpoint);
}

// Downloads into blobs/<etag>.incomplete (resuming what an earlier attempt left), verifies the size
// and the sha256, and renames it to blobs/<etag>. On a mismatch the partial file is deleted.
void download_blob(const std::string& repo, const std::string& endpoint, const RepoCache& cache,
                   const FileMetadata& m, const FetchOptions& options) {
  const fs::path partial = cache.incomplete(m.etag);
  std::error_code ec;
  fs::create_directories(partial.parent_path(), ec);
  MF_CHECK(!ec, "{}: cannot create {} ({})", repo, partial.parent_path().string(), ec.message());
  // The file storage is another host on the real hub: the token goes only to the hub itself.
  const bool send_token = url_origin(m.location) == url_origin(endpoint);
  ProgressBar bar(repo, m.size, options.progress && !hub_progress_disabled());
  for (int resumes = 0;; ++resumes) {
    const int64_t before = size_of(partial);
    const DownloadResult d = http_download(m.location, token(), send_token, partial, [&](int64_t n) { bar.update(n); });
    const int64_t now = size_of(partial);
    if (d.status == 416) {
      // The range starts at the end: an earlier attempt got everything; otherwise start over.
      if (m.size >= 0 && now == m.size) break;
      fs::remove(partial, ec);
      MF_CHECK(resumes < kMaxResumes, "{}: the server refuses the download's range requests (HTTP 416)", repo);
      continue;
    }
    if (d.status >= 400) {
      bar.finish();
      fail("{}: downloading {} failed: HTTP {}{}", repo, m.location, d.status,
           d.status == 401 || d.status == 403 ? " (a private or gated repository needs HF_TOKEN)" : "");
    }
    if (d.ok() && (m.size < 0 || now >= m.size)) break;
    const std::string why = d.ok() ? "the connection closed early" : d.error;
    if (now > before && resumes < kMaxResumes) continue;  // it progressed: resume where it stopped
    bar.finish();
    fail("{}: the download stopped after {} of {} bytes ({}); run the command again to resume it", repo, now,
         m.size >= 0 ? std::to_string(m.size) : "?", why);
  }
  bar.finish();
  const int64_t got = size_of(partial);
  if (m.size >= 0 && got != m.size) {
    fs::remove(partial, ec);
    fail("{}: the download has {} bytes but the hub announced {}; the partial file was deleted, run the command "
         "again", repo, got, m.size);
  }
  // LFS files (all weights) have their sha256 as ETag; a git blob's ETag is not a content hash.
  if (is_sha256(m.etag)) {
    const std::string digest = sha256_file(partial);
    if (digest != m.etag) {
      fs::remove(partial, ec);
      fail("{}: the downloaded file is corrupted (sha256 {} instead of {}); it was deleted, run the command again",
           repo, digest, m.etag);
    }
  }
  fs::rename(partial, cache.blob(m.etag), ec);
  MF_CHECK(!ec, "{}: cannot move the download into {} ({})", repo, cache.blob(m.etag).string(), ec.message());
}

}  // namespace

std::string pretrained_repo(const std::string& model_name_or_tag) {
  auto [model, tag] = split_model_tag(model_name_or_tag);
  MetaFormerConfig c = zoo_config(model);  // an unknown model is an error listing close names
  if (tag.empty()) {
    tag = default_pretrained_tag(model);
  } else {
    apply_pretrained_cfg(c, model, tag);  // an unknown tag is an error listing the model's tags
  }
  return "timm/" + model + "." + tag;
}

fs::path fetch_pretrained(const std::string& model_name_or_tag, const FetchOptions& options) {
  const std::string repo = pretrained_repo(model_name_or_tag);
  const std::string revision = options.revision.empty() ? "main" : options.revision;
  MF_CHECK(revision.find("..") == std::string::npos && revision.front() != '/', "{}: bad revision '{}'", repo, revision);
  const RepoCache cache(hub_cache_dir(), repo);
  if (auto cached = cache.find(revision, kWeightsFile)) return *cached;
  MF_CHECK(!hub_offline(), "{}: not in the cache ({}) and HF_HUB_OFFLINE is set; run once with a network "
           "connection, or unset HF_HUB_OFFLINE", repo, cache.root().string());

  const std::string endpoint = hub_endpoint();
  const std::string url = endpoint + "/" + repo + "/resolve/" + revision + "/" + kWeightsFile;
  const FileMetadata m = http_head(url, token());
  check_metadata(repo, endpoint, m);
  {
    // One writer per blob, across processes (huggingface_hub takes the same lock).
    FileLock lock(cache.lock_file(m.etag));
    std::error_code ec;
    if (!fs::exists(cache.blob(m.etag), ec)) download_blob(repo, endpoint, cache, m, options);
  }
  return cache.link(revision, m.commit, m.etag, kWeightsFile);
}

}  // namespace mf::hub
