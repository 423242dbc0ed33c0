#include "io/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace mf {

namespace {

// Closes a descriptor on every path out of a function, keeping errno intact for the error message.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) {
      const int saved = errno;
      ::close(fd_);
      errno = saved;
    }
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now and reports the result: close() can be the first call to see a delayed write error.
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail("cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail("cannot open {}: {}", path, std::strerror(errno));
  // A directory or device has no meaningful st_size, and mapping a FIFO fails obscurely.
  if (!S_ISREG(st.st_mode)) fail("cannot open {}: not a regular file", path);
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {  // mmap rejects a length of 0
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (p == MAP_FAILED) fail("cannot open {}: mmap failed: {}", path, std::strerror(errno));
    f->data_ = static_cast<const uint8_t*>(p);
  }
  return f;  // the mapping stays valid after the descriptor is closed
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

std::vector<uint8_t> read_file(const std::string& path) {
  // Plain reads rather than a mapping, so that pipes and /proc files (st_size 0) work too.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail("cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail("cannot open {}: {}", path, std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail("cannot open {}: is a directory", path);
  std::vector<uint8_t> out;
  out.reserve(S_ISREG(st.st_mode) ? static_cast<size_t>(st.st_size) : 0);
  uint8_t chunk[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot read {}: {}", path, std::strerror(errno));
    }
    if (n == 0) break;
    out.insert(out.end(), chunk, chunk + n);
  }
  return out;
}

void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  // The temp file lives in the destination folder: rename() is only atomic within one file system.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) fail("cannot write {}: {}", path, std::strerror(errno));
  auto abandon = [&](const char* step, int err) {
    if (fd.get() >= 0) fd.close();
    ::unlink(tmp.c_str());
    fail("cannot write {}: {} failed: {}", path, step, std::strerror(err));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) abandon("write", errno);
    if (n == 0) abandon("write", ENOSPC);  // no progress: treat like a full disk rather than spin
    done += static_cast<size_t>(n);
  }
  // Without the fsync a crash after the rename could leave PATH naming a file whose data never
  // reached the disk, which is worse than the old contents.
  if (::fsync(fd.get()) != 0) abandon("fsync", errno);
  if (fd.close() != 0) abandon("close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) abandon("rename", errno);
  // The rename lives in the folder's entries; sync them so that it survives a crash. Failure here is
  // not reported: the new file is complete and in place, only its durability is in doubt.
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() >= 0) ::fsync(dfd.get());
}

}  // namespace mf
