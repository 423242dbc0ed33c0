#include "core/buffer_pool.h"

#include <cstdlib>
#include <new>

namespace mf {

namespace {
constexpr size_t kAlign = 64;  // one cache line; also what AVX-512 loads like
}

BufferPool& BufferPool::host() {
  static BufferPool* pool = new BufferPool();  // never destroyed: tensors may outlive static destructors
  return *pool;
}

size_t BufferPool::size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;
  // Small buffers: round to 64 bytes. Large ones: round to 4 KiB so that the same shapes map to the
  // same class while odd sizes waste at most one page.
  const size_t q = bytes < (1u << 16) ? kAlign : 4096;
  return (bytes + q - 1) / q * q;
}

void* BufferPool::acquire(size_t bytes) {
  const size_t cls = size_class(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(cls);
    if (it != free_.end()) {
      void* p = it->second;
      free_.erase(it);
      in_use_ += cls;
      if (in_use_ > peak_) peak_ = in_use_;
      return p;
    }
  }
  void* p = std::aligned_alloc(kAlign, cls);
  if (!p) throw std::bad_alloc();
  std::lock_guard<std::mutex> lock(mu_);
  in_use_ += cls;
  if (in_use_ > peak_) peak_ = in_use_;
  return p;
}

void BufferPool::release(void* p, size_t bytes) {
  if (!p) return;
  const size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  in_use_ -= cls;
  free_.emplace(cls, p);
}

void BufferPool::trim() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [cls, p] : free_) std::free(p);
  free_.clear();
}

size_t BufferPool::bytes_in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_use_;
}

size_t BufferPool::peak_bytes_in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_;
}

void BufferPool::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  peak_ = in_use_;
}

}  // namespace mf
