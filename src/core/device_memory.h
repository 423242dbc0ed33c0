// DeviceMemory: how the core reaches an accelerator's memory without depending on its runtime. The
// CUDA backend (src/ops/cuda/) registers one at start-up when the build has CUDA; without it, a
// tensor on Device::CUDA cannot be made and says so. All copies and fills are ordered on the
// backend's stream; copies to or from the host wait for it (the host reads the result next).
#pragma once

#include <cstddef>

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
  // Page-locked host memory for what is uploaded every step (a training batch), or null where the
  // device has none to give (the caller then uses ordinary memory). A copy to the device from such
  // a block does not wait for the device; a block handed back is reused only after every copy from
  // it has finished.
  virtual void* allocate_pinned(size_t bytes) {
    (void)bytes;
    return nullptr;
  }
  virtual void release_pinned(void* p) { (void)p; }
};

// The registered device memory, or null when no accelerator is available in this build.
DeviceMemory* device_memory();
void set_device_memory(DeviceMemory* m);

}  // namespace mf
