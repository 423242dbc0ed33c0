// DeviceMemory: how the core reaches an accelerator's memory without depending on its runtime. The
// CUDA backend (src/ops/cuda/) registers one at start-up when the build has CUDA; without it, a
// tensor on Device::CUDA cannot be made and says so. All copies and fills are ordered on the
// backend's stream; copies to or from the host wait for it (the host reads the result next).
#pragma once

#include <cstddef>
#include <functional>

namespace mf {

class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  // Throws mf::Error (naming the size) when the device is out of memory or over its limit.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* p, size_t bytes) = 0;
  enum class Direction { host_to_device, device_to_host, device_to_device };
  virtual void copy(void* dst, const void* src, size_t bytes, Direction dir) = 0;
  virtual void fill(float* p, size_t count, float value) = 0;
  // Sets `bytes` bytes at p to zero: a zero of every dtype (fp32 and bf16 zeros are all-zero bits).
  virtual void zero(void* p, size_t bytes) = 0;
  // Page-locked host memory for what is uploaded every step (a training batch), or null where the
  // device has none to give (the caller then uses ordinary memory). A copy to the device from such
  // a block does not wait for the device; a block handed back is reused only after every copy from
  // it has finished.
  virtual void* allocate_pinned(size_t bytes) {
    (void)bytes;
    return nullptr;
  }
  virtual void release_pinned(void* p) { (void)p; }
  // Queues a copy of `bytes` from device memory at src for the host and returns without waiting for
  // the device; calling the returned function (once) waits for that copy and writes the bytes to
  // dst. The host reads a result (a training step's losses) later while the device keeps working.
  // This default copies at once.
  virtual std::function<void()> copy_to_host_later(void* dst, const void* src, size_t bytes) {
    copy(dst, src, bytes, Direction::device_to_host);
    return [] {};
  }
};

// The registered device memory, or null when no accelerator is available in this build.
DeviceMemory* device_memory();
void set_device_memory(DeviceMemory* m);

}  // namespace mf
