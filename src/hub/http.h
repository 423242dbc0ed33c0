// The two HTTP exchanges of a hub download, over libcurl: a HEAD on the resolve URL for the file's
// metadata (as huggingface_hub's get_hf_file_metadata reads it), and a GET of the bytes that can
// resume from an offset with a Range request.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace mf::hub {

struct FileMetadata {
  long status = 0;           // HTTP status of the final response; 0 when no response came
  std::string error;         // the transport error (no response), else empty
  std::string commit;        // X-Repo-Commit
  std::string etag;          // X-Linked-Etag, else ETag, without quotes and W/ (the sha256 for LFS files)
  std::string location;      // where the bytes are: the redirect's Location (absolute), else the URL itself
  int64_t size = -1;         // X-Linked-Size, else Content-Length; -1 when unknown
  std::string error_code;    // X-Error-Code (RepoNotFound, EntryNotFound, GatedRepo, ...)
};

// HEAD `url`, following relative redirects only (a renamed repository) and reading, not following,
// the hub's redirect to its file storage, whose headers carry the metadata. `token` (HF_TOKEN), when
// not empty, is sent as a bearer token.
FileMetadata http_head(const std::string& url, const std::string& token);

struct DownloadResult {
  long status = 0;     // HTTP status; 0 when no response came
  std::string error;   // transport error (connection refused, dropped midway, ...), else empty
  bool ok() const { return error.empty() && (status == 200 || status == 206); }
};

// GETs `url` into `file`, continuing at `file`'s current size with a Range request; a server that
// answers the whole file (200) restarts it from zero. Redirects are followed. `progress` is called
// with the file's size so far. `token` is sent only when `send_token` (the hub's own host).
DownloadResult http_download(const std::string& url, const std::string& token, bool send_token,
                             const std::filesystem::path& file, const std::function<void(int64_t)>& progress);

// "https://host:port" of a URL (scheme and authority), to compare hosts and resolve relative redirects.
std::string url_origin(const std::string& url);

}  // namespace mf::hub
