// Tensor: a dense, contiguous float32 array with a shape and a device tag.
//
// Layout conventions (see docs/design.md): activations are channels-last, (B, H, W, C) for image
// stages and (B, N, C) for token stages, which share the same memory order. Parameters keep timm's
// shapes exactly (conv weights [out, in/groups, kh, kw], linear weights [out, in]) so that names,
// shapes and bytes round-trip with timm's state dicts.
//
// Copies of a Tensor share storage (like torch.Tensor); clone() makes a deep copy. A tensor lives on
// the CPU or, in a build with CUDA, on the GPU (Device::CUDA: data() is then a device pointer that
// only the CUDA backend dereferences; to(Device::CPU) brings it back). The element type is fp32,
// except the activations of the CUDA backend in bf16 mode, which are stored as bfloat16 on the GPU:
// only that backend reads them (raw()), and to(Device::CPU) widens them to fp32, so host code only
// ever sees fp32 (docs/cuda.md, "Devices and dtypes").
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "core/shape.h"

namespace mf {

enum class Device : uint8_t { CPU, CUDA };
const char* device_name(Device d);
// The element type. bf16 exists only on devices (see above).
enum class DType : uint8_t { f32, bf16 };
const char* dtype_name(DType t);
size_t dtype_size(DType t);

struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  std::function<void(Storage&)> release;  // empty for borrowed memory
  // Unique per storage for the life of the process, and bumped `version` on every in-place update
  // of a parameter: together they key caches of data derived from a tensor (weights reordered for
  // a backend's kernels), which are kept in `derived` and so die with the storage.
  uint64_t id = 0;
  uint64_t version = 0;
  std::map<std::string, std::shared_ptr<void>> derived;
  ~Storage();
};

class Tensor {
 public:
  Tensor() = default;

  // Uninitialised tensor from the buffer pool (host) or the device's pool. bf16 only on a device.
  static Tensor empty(const Shape& shape, Device device = Device::CPU, DType dtype = DType::f32);
  static Tensor zeros(const Shape& shape);
  static Tensor full(const Shape& shape, float value);
  static Tensor from(const Shape& shape, std::span<const float> values);
  // Borrows memory owned elsewhere (e.g. a memory-mapped file); `keep_alive` is held until the last
  // tensor sharing this storage is gone.
  static Tensor borrow(float* data, const Shape& shape, std::shared_ptr<void> keep_alive);
  // A host tensor in the device's page-locked memory when it gives some (DeviceMemory::allocate_pinned),
  // else an ordinary one: for data uploaded every step.
  static Tensor empty_pinned(const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim(); }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t numel() const { return shape_.numel(); }
  Device device() const;
  DType dtype() const { return dtype_; }

  // The fp32 elements; a bf16 tensor has none (this throws: read it with raw() on its device, or
  // bring it to the host with to(Device::CPU)).
  float* data();
  const float* data() const;
  // The first element, whatever the dtype.
  void* raw();
  const void* raw() const;
  std::span<float> span() { return {data(), static_cast<size_t>(numel())}; }
  std::span<const float> span() const { return {data(), static_cast<size_t>(numel())}; }

  // Same storage, new shape with the same element count.
  Tensor reshape(const Shape& shape) const;
  // Rows [begin, end) of the first dimension, sharing storage.
  Tensor slice0(int64_t begin, int64_t end) const;
  Tensor clone() const;
  // This tensor on `device`: itself when it is already there, else a copy. On the host the copy is
  // always fp32 (a bf16 device tensor is widened exactly); on a device it keeps the dtype.
  Tensor to(Device device) const;
  // to(Device::CPU), read later: the copy is queued now (a GPU keeps working) and the returned
  // function waits for it and gives the host tensor. A host tensor is given as it is.
  std::function<Tensor()> to_host_later() const;
  // Same dtype on both sides, or a bf16 source into an fp32 host tensor (widened).
  void copy_from(const Tensor& src);
  void fill(float value);
  void zero();  // any dtype, on any device

  // True when both tensors view the very same memory range.
  bool same_memory(const Tensor& o) const;
  // True when both view (parts of) one storage.
  bool shares_storage(const Tensor& o) const { return storage_ != nullptr && storage_ == o.storage_; }
  // No other tensor (no view, copy or hook's reference) shares this storage: an update in place is
  // seen by nobody else.
  bool sole_owner() const { return storage_ != nullptr && storage_.use_count() == 1; }

  // Caches of data derived from this tensor's current contents (see Storage::id / version).
  uint64_t storage_id() const;
  uint64_t version() const;
  // "storage:version,": appended for each input of a cache that depends on several tensors (a
  // derived value is keyed by its own tensor's version only), so the key changes with any of them.
  std::string version_key() const;
  void bump_version();  // call after changing the contents of a parameter in place
  // Returns the cached object under `key` if it was made from the current version, else null.
  std::shared_ptr<void> derived(const std::string& key) const;
  // The cached object under `key` made from this view at any version (null if none): for an update
  // that rewrites the derived value together with the tensor and then stamps it anew with set_derived
  // (the cuda AdamW step refreshing a weight's bf16 copy).
  std::shared_ptr<void> derived_any_version(const std::string& key) const;
  void set_derived(const std::string& key, std::shared_ptr<void> value) const;
  // Forgets the cached object under `key`, if any (a device copy that is no longer needed).
  void drop_derived(const std::string& key) const;

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  int64_t offset_ = 0;  // in elements
  DType dtype_ = DType::f32;
};

// Throws mf::Error naming `what` unless t has exactly `expected`.
void check_shape(const Tensor& t, const Shape& expected, const std::string& what);

}  // namespace mf
