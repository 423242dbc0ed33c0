#include "core/tensor.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "core/buffer_pool.h"
#include "core/device_memory.h"
#include "core/error.h"

namespace mf {

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }
const char* dtype_name(DType t) { return t == DType::f32 ? "fp32" : "bf16"; }
size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

namespace {
DeviceMemory* g_device_memory = nullptr;
}  // namespace
DeviceMemory* device_memory() { return g_device_memory; }
void set_device_memory(DeviceMemory* m) { g_device_memory = m; }

Storage::~Storage() {
  if (release) release(*this);
}

namespace {
uint64_t next_storage_id() {
  static std::atomic<uint64_t> counter{0};
  return ++counter;
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, Device device, DType dtype) {
  MF_CHECK(dtype == DType::f32 || device != Device::CPU, "bf16 tensors live on a device, not on the host");
  Tensor t;
  const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  auto st = std::make_shared<Storage>();
  if (device == Device::CPU) {
    st->data = BufferPool::host().acquire(bytes);
    st->release = [](Storage& s) { BufferPool::host().release(s.data, s.bytes); };
  } else {
    DeviceMemory* dm = device_memory();
    MF_CHECK(dm != nullptr, "device {} is not available (no CUDA backend in this build, or no GPU)",
             device_name(device));
    st->data = dm->allocate(bytes);
    st->release = [dm](Storage& s) { dm->release(s.data, s.bytes); };
  }
  st->bytes = bytes;
  st->device = device;
  st->id = next_storage_id();
  t.storage_ = std::move(st);
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape) { return full(shape, 0.f); }

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  t.fill(value);
  return t;
}

Tensor Tensor::from(const Shape& shape, std::span<const float> values) {
  MF_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "{} values given for shape {}", values.size(),
           shape.str());
  Tensor t = empty(shape);
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

Tensor Tensor::borrow(float* data, const Shape& shape, std::shared_ptr<void> keep_alive) {
  Tensor t;
  auto st = std::make_shared<Storage>();
  st->data = data;
  st->bytes = static_cast<size_t>(shape.numel()) * sizeof(float);
  st->id = next_storage_id();
  st->release = [keep = std::move(keep_alive)](Storage&) {};
  t.storage_ = std::move(st);
  t.shape_ = shape;
  return t;
}

Tensor Tensor::empty_pinned(const Shape& shape) {
  DeviceMemory* dm = device_memory();
  const size_t bytes = static_cast<size_t>(shape.numel()) * sizeof(float);
  void* p = dm && bytes ? dm->allocate_pinned(bytes) : nullptr;
  if (!p) return empty(shape);
  return borrow(static_cast<float*>(p), shape, std::shared_ptr<void>(p, [dm](void* q) { dm->release_pinned(q); }));
}

Device Tensor::device() const { return storage_ ? storage_->device : Device::CPU; }

float* Tensor::data() {
  MF_ASSERT(storage_ != nullptr);
  MF_CHECK(dtype_ == DType::f32, "a {} tensor read as fp32 (bring it to the host with to(Device::CPU))",
           dtype_name(dtype_));
  return static_cast<float*>(storage_->data) + offset_;
}

const float* Tensor::data() const {
  MF_ASSERT(storage_ != nullptr);
  MF_CHECK(dtype_ == DType::f32, "a {} tensor read as fp32 (bring it to the host with to(Device::CPU))",
           dtype_name(dtype_));
  return static_cast<const float*>(storage_->data) + offset_;
}

void* Tensor::raw() {
  MF_ASSERT(storage_ != nullptr);
  return static_cast<char*>(storage_->data) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

const void* Tensor::raw() const {
  MF_ASSERT(storage_ != nullptr);
  return static_cast<const char*>(storage_->data) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

Tensor Tensor::reshape(const Shape& shape) const {
  MF_CHECK(shape.numel() == numel(), "cannot reshape {} to {}", shape_.str(), shape.str());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  MF_ASSERT(ndim() >= 1 && begin >= 0 && begin <= end && end <= dim(0));
  Tensor t = *this;
  const int64_t row = dim(0) == 0 ? 0 : numel() / dim(0);
  t.offset_ = offset_ + begin * row;
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, device(), dtype_);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device target) const {
  if (!defined() || device() == target) return *this;
  Tensor t = empty(shape_, target, target == Device::CPU ? DType::f32 : dtype_);
  t.copy_from(*this);
  return t;
}

std::function<Tensor()> Tensor::to_host_later() const {
  if (!defined() || device() == Device::CPU) return [t = *this] { return t; };
  if (dtype_ != DType::f32) return [t = to(Device::CPU)] { return t; };  // widened now, on the host
  Tensor host = empty(shape_);
  MF_ASSERT(device_memory() != nullptr);
  auto wait = device_memory()->copy_to_host_later(host.data(), raw(),
                                                  static_cast<size_t>(numel()) * sizeof(float));
  // The device tensor may go now: its memory is reused in stream order, after the copy.
  return [host, wait]() mutable {
    if (wait) {
      wait();
      wait = nullptr;
    }
    return host;
  };
}

void Tensor::copy_from(const Tensor& src) {
  MF_CHECK(src.numel() == numel(), "copy of {} into {}", src.shape().str(), shape_.str());
  if (!numel() || same_memory(src)) return;
  if (src.dtype() == DType::bf16 && dtype_ == DType::f32 && device() == Device::CPU) {
    // Widen on the host: bf16 is the top half of an fp32, so this is exact.
    std::vector<uint16_t> bits(static_cast<size_t>(numel()));
    MF_ASSERT(device_memory() != nullptr);
    device_memory()->copy(bits.data(), src.raw(), bits.size() * 2, DeviceMemory::Direction::device_to_host);
    float* d = data();
    for (size_t i = 0; i < bits.size(); ++i) {
      const uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
      std::memcpy(d + i, &u, 4);
    }
    return;
  }
  MF_CHECK(src.dtype() == dtype_, "copy of a {} tensor into a {} one", dtype_name(src.dtype()), dtype_name(dtype_));
  const size_t bytes = static_cast<size_t>(numel()) * dtype_size(dtype_);
  if (device() == Device::CPU && src.device() == Device::CPU) {
    std::memmove(data(), src.data(), bytes);
    return;
  }
  using Dir = DeviceMemory::Direction;
  const Dir dir = device() == Device::CPU       ? Dir::device_to_host
                  : src.device() == Device::CPU ? Dir::host_to_device
                                                : Dir::device_to_device;
  MF_ASSERT(device_memory() != nullptr);
  device_memory()->copy(raw(), src.raw(), bytes, dir);
}

void Tensor::fill(float value) {
  float* p = data();  // fp32 only (the backends never fill activations)
  if (device() != Device::CPU) {
    device_memory()->fill(p, static_cast<size_t>(numel()), value);
    return;
  }
  std::fill(p, p + numel(), value);
}

void Tensor::zero() {
  const size_t bytes = static_cast<size_t>(numel()) * dtype_size(dtype_);
  if (device() != Device::CPU) {
    device_memory()->zero(raw(), bytes);
    return;
  }
  std::memset(raw(), 0, bytes);
}

bool Tensor::same_memory(const Tensor& o) const {
  return defined() && o.defined() && storage_ == o.storage_ && offset_ == o.offset_ && dtype_ == o.dtype_;
}

uint64_t Tensor::storage_id() const { return storage_ ? storage_->id : 0; }
uint64_t Tensor::version() const { return storage_ ? storage_->version : 0; }
std::string Tensor::version_key() const {
  return std::to_string(storage_id()) + ":" + std::to_string(version()) + ",";
}

void Tensor::bump_version() {
  if (storage_) ++storage_->version;
}

namespace {
// A derived value belongs to the view it was made from: the storage's version, and the view's offset
// and element count (a reshaped view shares it; a row slice of the same storage does not, even one
// that starts where the whole tensor does).
struct Derived {
  uint64_t version;
  int64_t offset;
  int64_t numel;
  std::shared_ptr<void> value;
};
}  // namespace

std::shared_ptr<void> Tensor::derived(const std::string& key) const {
  if (!storage_) return nullptr;
  auto it = storage_->derived.find(key);
  if (it == storage_->derived.end()) return nullptr;
  auto d = std::static_pointer_cast<Derived>(it->second);
  return d->version == storage_->version && d->offset == offset_ && d->numel == numel() ? d->value : nullptr;
}

std::shared_ptr<void> Tensor::derived_any_version(const std::string& key) const {
  if (!storage_) return nullptr;
  auto it = storage_->derived.find(key);
  if (it == storage_->derived.end()) return nullptr;
  auto d = std::static_pointer_cast<Derived>(it->second);
  return d->offset == offset_ && d->numel == numel() ? d->value : nullptr;
}

void Tensor::set_derived(const std::string& key, std::shared_ptr<void> value) const {
  MF_ASSERT(storage_ != nullptr);
  storage_->derived[key] = std::make_shared<Derived>(Derived{storage_->version, offset_, numel(), std::move(value)});
}

void Tensor::drop_derived(const std::string& key) const {
  if (storage_) storage_->derived.erase(key);
}

void check_shape(const Tensor& t, const Shape& expected, const std::string& what) {
  MF_CHECK(t.shape() == expected, "{}: expected shape {}, got {}", what, expected.str(), t.shape().str());
}

}  // namespace mf
