// A small HTTP/1.1 server on 127.0.0.1 (an ephemeral port, one thread) that answers like the Hugging
// Face hub, for the hub client's tests (test_hub.cpp), which must not need the internet:
//   HEAD/GET /<owner>/<name>/resolve/<revision>/<file>  -> 302 to /cdn/<sha256>, with the hub's
//        X-Repo-Commit, X-Linked-Etag (the sha256), X-Linked-Size and a git ETag; 404 + X-Error-Code
//        RepoNotFound for unknown repositories; 401 when a token is required and not sent
//   GET /cdn/<sha256>  -> the bytes, honouring "Range: bytes=N-" (206, or 416 past the end)
// Faults on the /cdn transfers: drop the connection after some bytes (a number of times), flip a byte,
// or ignore Range requests.
// Every request is recorded for the tests to inspect. One connection at a time, closed after each answer.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hub/sha256.h"

namespace mf::test {

class HubTestServer {
 public:
  struct Request {
    std::string method, path;
    std::map<std::string, std::string> headers;  // lowercase names
    std::string header(const std::string& name) const {
      auto it = headers.find(name);
      return it == headers.end() ? "" : it->second;
    }
  };
  struct Faults {
    int64_t drop_after = -1;  // body bytes sent before the connection is dropped
    int drops = 0;            // how many /cdn transfers are dropped so
    bool corrupt = false;     // flip the first byte of every /cdn body
    bool ignore_range = false;  // answer every /cdn GET with the whole file (200), as some servers do
    std::string token;        // required as "Authorization: Bearer <token>" on /resolve when not empty
  };

  HubTestServer() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener_ < 0) throw std::runtime_error("test server: socket failed");
    const int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;  // ephemeral
    socklen_t len = sizeof addr;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listener_, 16) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      throw std::runtime_error("test server: cannot listen on 127.0.0.1");
    endpoint_ = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
    thread_ = std::thread([this] { serve(); });
  }

  ~HubTestServer() {
    stop_ = true;
    thread_.join();
    ::close(listener_);
  }

  const std::string& endpoint() const { return endpoint_; }

  // Serves `content` as <repo>'s model.safetensors at revision main = `commit`. Returns its sha256.
  std::string add(const std::string& repo, const std::string& content,
                  const std::string& commit = "0123456789abcdef0123456789abcdef01234567") {
    const std::string sha = hub::sha256_hex(content);
    std::lock_guard<std::mutex> lock(mutex_);
    repos_[repo] = {content, sha, commit};
    return sha;
  }

  void set_faults(const Faults& f) {
    std::lock_guard<std::mutex> lock(mutex_);
    faults_ = f;
  }

  std::vector<Request> requests() {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }
  void clear_requests() {
    std::lock_guard<std::mutex> lock(mutex_);
    requests_.clear();
  }

 private:
  struct Repo {
    std::string content, sha, commit;
  };

  void serve() {
    while (!stop_) {
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      handle(fd);
      ::close(fd);
    }
  }

  static bool send_all(int fd, const char* data, size_t n) {
    while (n > 0) {
      const ssize_t k = ::send(fd, data, n, MSG_NOSIGNAL);
      if (k <= 0) return false;
      data += k;
      n -= static_cast<size_t>(k);
    }
    return true;
  }

  static void respond(int fd, const std::string& status, const std::vector<std::string>& headers,
                      const std::string& body, size_t content_length, size_t send_bytes) {
    std::string head = "HTTP/1.1 " + status + "\r\n";
    for (auto& h : headers) head += h + "\r\n";
    head += "Content-Length: " + std::to_string(content_length) + "\r\nConnection: close\r\n\r\n";
    if (send_all(fd, head.data(), head.size())) send_all(fd, body.data(), std::min(send_bytes, body.size()));
  }

  void handle(int fd) {
    std::string raw;
    char buf[4096];
    while (raw.find("\r\n\r\n") == std::string::npos) {
      const ssize_t k = ::recv(fd, buf, sizeof buf, 0);
      if (k <= 0) return;
      raw.append(buf, static_cast<size_t>(k));
    }
    Request r;
    const size_t line_end = raw.find("\r\n");
    const std::string line = raw.substr(0, line_end);
    const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    r.method = line.substr(0, sp1);
    r.path = line.substr(sp1 + 1, sp2 - sp1 - 1);
    for (size_t pos = line_end + 2; pos < raw.size();) {
      const size_t end = raw.find("\r\n", pos);
      if (end == std::string::npos || end == pos) break;
      const std::string h = raw.substr(pos, end - pos);
      const size_t colon = h.find(':');
      if (colon != std::string::npos) {
        std::string name = h.substr(0, colon);
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        r.headers[name] = h.substr(h.find_first_not_of(' ', colon + 1));
      }
      pos = end + 2;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    requests_.push_back(r);
    const bool head = r.method == "HEAD";
    if (r.path.rfind("/cdn/", 0) == 0) {
      const std::string sha = r.path.substr(5);
      const Repo* repo = nullptr;
      for (auto& [name, rp] : repos_)
        if (rp.sha == sha) repo = &rp;
      if (!repo) return respond(fd, "404 Not Found", {}, "", 0, 0);
      std::string body = repo->content;
      if (faults_.corrupt && !body.empty()) body[0] = static_cast<char>(body[0] ^ 0x5a);
      size_t from = 0;
      if (const std::string range = r.header("range"); range.rfind("bytes=", 0) == 0 && !faults_.ignore_range)
        from = std::stoull(range.substr(6));
      std::vector<std::string> headers{"Content-Type: application/octet-stream", "Accept-Ranges: bytes"};
      std::string status = "200 OK";
      if (from > 0) {
        if (from >= body.size()) {
          return respond(fd, "416 Range Not Satisfiable", {"Content-Range: bytes */" + std::to_string(body.size())},
                         "", 0, 0);
        }
        headers.push_back("Content-Range: bytes " + std::to_string(from) + "-" + std::to_string(body.size() - 1) + "/" +
                          std::to_string(body.size()));
        status = "206 Partial Content";
        body = body.substr(from);
      }
      size_t send_bytes = head ? 0 : body.size();
      if (!head && faults_.drops > 0 && faults_.drop_after >= 0) {
        --faults_.drops;
        send_bytes = std::min(send_bytes, static_cast<size_t>(faults_.drop_after));
      }
      lock.unlock();
      return respond(fd, status, headers, body, body.size(), send_bytes);
    }
    // /<owner>/<name>/resolve/<revision>/<file>
    const size_t resolve = r.path.find("/resolve/");
    if (resolve == std::string::npos) return respond(fd, "404 Not Found", {}, "", 0, 0);
    const std::string repo_id = r.path.substr(1, resolve - 1);
    auto it = repos_.find(repo_id);
    if (it == repos_.end())
      return respond(fd, "404 Not Found", {"X-Error-Code: RepoNotFound", "X-Error-Message: Repository not found"}, "",
                     0, 0);
    if (!faults_.token.empty() && r.header("authorization") != "Bearer " + faults_.token)
      return respond(fd, "401 Unauthorized", {"X-Error-Code: GatedRepo"}, "", 0, 0);
    const Repo& repo = it->second;
    respond(fd, "302 Found",
            {"Location: " + endpoint_ + "/cdn/" + repo.sha, "X-Repo-Commit: " + repo.commit,
             "X-Linked-Etag: \"" + repo.sha + "\"", "X-Linked-Size: " + std::to_string(repo.content.size()),
             // The hub's ETag on an LFS redirect is the git pointer's, not the content's sha256.
             "ETag: W/\"1111111111111111111111111111111111111111\""},
            "", 0, 0);
  }

  int listener_ = -1;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mutex_;
  std::map<std::string, Repo> repos_;
  Faults faults_;
  std::vector<Request> requests_;
};

}  // namespace mf::test
