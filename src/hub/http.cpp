#include "hub/http.h"

#include <curl/curl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "core/error.h"

namespace mf::hub {

namespace fs = std::filesystem;

namespace {

const char* kUserAgent = "metaformer.cpp/0.1 (hub client; libcurl)";

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Curl = std::unique_ptr<CURL, CurlDeleter>;
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// The headers of the last response seen (a new status line starts a new set: with redirects
// followed, one transfer sees several responses).
size_t collect_header(char* data, size_t size, size_t n, void* user) {
  auto& headers = *static_cast<std::map<std::string, std::string>*>(user);
  const std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    headers.clear();
  } else if (const size_t colon = line.find(':'); colon != std::string::npos) {
    headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }
  return size * n;
}

Slist request_headers(const std::string& token, const std::string& range) {
  curl_slist* list = nullptr;
  // The size and sha256 are of the file's bytes, not of a compressed transfer.
  list = curl_slist_append(list, "Accept-Encoding: identity");
  if (!token.empty()) list = curl_slist_append(list, ("Authorization: Bearer " + token).c_str());
  if (!range.empty()) list = curl_slist_append(list, ("Range: " + range).c_str());
  return Slist(list);
}

void common_options(CURL* c, const std::string& url, curl_slist* headers, char* errbuf) {
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_USERAGENT, kUserAgent);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for DNS timeouts
  // Only the web: a redirect must not lead to file://, ftp://, ...
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(c, CURLOPT_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
  // A stalled connection (under 1 byte/s for a minute) is a failure, not a hang.
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
}

std::string transport_error(CURLcode code, const char* errbuf) {
  return errbuf[0] ? std::string(errbuf) : std::string(curl_easy_strerror(code));
}

std::string normalize_etag(std::string etag) {
  if (etag.rfind("W/", 0) == 0) etag = etag.substr(2);
  etag.erase(std::remove(etag.begin(), etag.end(), '"'), etag.end());
  return etag;
}

int64_t parse_size(const std::string& s) {
  if (s.empty() || !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); })) return -1;
  try {
    return std::stoll(s);
  } catch (const std::exception&) {
    return -1;
  }
}

struct Sink {
  std::FILE* file = nullptr;
  CURL* curl = nullptr;
  int64_t offset = 0;    // bytes already in the file when the transfer started
  int64_t written = 0;   // bytes written in this transfer
  bool started = false;
  int write_errno = 0;  // why writing the file failed (0: it did not)
  const std::function<void(int64_t)>* progress = nullptr;
};

size_t write_body(char* data, size_t size, size_t n, void* user) {
  auto& s = *static_cast<Sink*>(user);
  const size_t bytes = size * n;
  long status = 0;
  curl_easy_getinfo(s.curl, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200 && status != 206) return bytes;  // a redirect's or an error's page: not part of the file
  if (!s.started) {
    s.started = true;
    if (status == 200 && s.offset > 0) {
      // The server sent the whole file instead of the range: start again from zero.
      if (std::fflush(s.file) != 0 || ::ftruncate(fileno(s.file), 0) != 0 || std::fseek(s.file, 0, SEEK_SET) != 0) {
        s.write_errno = errno ? errno : EIO;
        return 0;
      }
      s.offset = 0;
    }
  }
  if (std::fwrite(data, 1, bytes, s.file) != bytes) {
    s.write_errno = errno ? errno : EIO;
    return 0;
  }
  s.written += static_cast<int64_t>(bytes);
  if (s.progress && *s.progress) (*s.progress)(s.offset + s.written);
  return bytes;
}

}  // namespace

std::string url_origin(const std::string& url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return "";
  const size_t path = url.find('/', scheme + 3);
  return lower(url.substr(0, path));
}

FileMetadata http_head(const std::string& url, const std::string& token) {
  global_init();
  FileMetadata m;
  std::string current = url;
  for (int hop = 0; hop < 10; ++hop) {
    Curl c(curl_easy_init());
    MF_CHECK(c, "libcurl: cannot create a handle");
    char errbuf[CURL_ERROR_SIZE] = {0};
    Slist headers = request_headers(token, "");
    std::map<std::string, std::string> got;
    common_options(c.get(), current, headers.get(), errbuf);
    curl_easy_setopt(c.get(), CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c.get(), CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c.get(), CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c.get(), CURLOPT_HEADERFUNCTION, collect_header);
    curl_easy_setopt(c.get(), CURLOPT_HEADERDATA, &got);
    const CURLcode rc = curl_easy_perform(c.get());
    if (rc != CURLE_OK) {
      m.error = transport_error(rc, errbuf);
      return m;
    }
    curl_easy_getinfo(c.get(), CURLINFO_RESPONSE_CODE, &m.status);
    auto header = [&](const char* name) {
      auto it = got.find(name);
      return it == got.end() ? std::string() : it->second;
    };
    const std::string location = header("location");
    if (m.status >= 300 && m.status < 400 && !location.empty() && location[0] == '/') {
      current = url_origin(current) + location;  // a relative redirect: the hub moved the repository
      continue;
    }
    m.commit = header("x-repo-commit");
    m.etag = normalize_etag(!header("x-linked-etag").empty() ? header("x-linked-etag") : header("etag"));
    m.size = parse_size(!header("x-linked-size").empty() ? header("x-linked-size") : header("content-length"));
    m.location = location.empty() ? current : location;
    m.error_code = header("x-error-code");
    return m;
  }
  m.error = "too many redirects";
  return m;
}

DownloadResult http_download(const std::string& url, const std::string& token, bool send_token, const fs::path& file,
                             const std::function<void(int64_t)>& progress) {
  global_init();
  DownloadResult r;
  std::error_code ec;
  const int64_t offset = fs::exists(file, ec) ? static_cast<int64_t>(fs::file_size(file, ec)) : 0;
  std::FILE* f = std::fopen(file.c_str(), offset > 0 ? "ab" : "wb");
  MF_CHECK(f, "{}: cannot write ({})", file.string(), std::strerror(errno));
  Sink sink;
  sink.file = f;
  sink.offset = offset;
  sink.progress = &progress;

  Curl c(curl_easy_init());
  if (!c) {
    std::fclose(f);
    fail("libcurl: cannot create a handle");
  }
  sink.curl = c.get();
  char errbuf[CURL_ERROR_SIZE] = {0};
  Slist headers = request_headers(send_token ? token : "", offset > 0 ? "bytes=" + std::to_string(offset) + "-" : "");
  common_options(c.get(), url, headers.get(), errbuf);
  curl_easy_setopt(c.get(), CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c.get(), CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c.get(), CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt(c.get(), CURLOPT_WRITEDATA, &sink);
  const CURLcode rc = curl_easy_perform(c.get());
  curl_easy_getinfo(c.get(), CURLINFO_RESPONSE_CODE, &r.status);
  if (std::fclose(f) != 0 && !sink.write_errno) sink.write_errno = errno ? errno : EIO;
  if (sink.write_errno) {
    r.error = fmt::format("cannot write {} ({})", file.string(), std::strerror(sink.write_errno));
  } else if (rc != CURLE_OK) {
    r.error = transport_error(rc, errbuf);
  }
  return r;
}

}  // namespace mf::hub
