// BufferPool: the host allocator behind every tensor. Freed buffers are kept and handed out again
// for the next request of the same size class, so a model that runs the same shapes repeatedly
// allocates only during its first pass (no malloc/free and no page faults in the steady state: glibc
// would otherwise return multi-MB activation buffers to the kernel and fault them back in).
// It also tracks the bytes in use and their peak, which `metaformer bench` reports.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>

namespace mf {

class BufferPool {
 public:
  static BufferPool& host();

  void* acquire(size_t bytes);
  void release(void* p, size_t bytes);
  // Frees every cached (not in use) buffer.
  void trim();

  size_t bytes_in_use() const;
  size_t peak_bytes_in_use() const;
  void reset_peak();

  // Rounds a request up to the size class actually allocated.
  static size_t size_class(size_t bytes);

 private:
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;  // size class -> cached buffers
  size_t in_use_ = 0;
  size_t peak_ = 0;
};

}  // namespace mf
