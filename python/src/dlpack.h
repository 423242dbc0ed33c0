// The few DLPack declarations the module reads (the public DLPack ABI, version 0.x "dltensor"
// capsules, which every producer still returns from a plain __dlpack__() call): a tensor's data
// pointer, device, dtype, shape and strides, and the deleter that gives it back to its producer.
#pragma once

#include <cstdint>

namespace mf::python::dlpack {

enum DeviceType : int32_t { kCPU = 1 };
enum TypeCode : uint8_t { kInt = 0, kUInt = 1, kFloat = 2, kBfloat = 4, kComplex = 5, kBool = 6 };

struct Device {
  int32_t device_type;
  int32_t device_id;
};

struct DataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct Tensor {
  void* data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; null means compact row-major
  uint64_t byte_offset;
};

struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor* self);
};

// The capsule names of the protocol: a consumer that takes the tensor renames the capsule to
// kUsedCapsuleName and calls the deleter itself when done.
constexpr const char* kCapsuleName = "dltensor";
constexpr const char* kUsedCapsuleName = "used_dltensor";

}  // namespace mf::python::dlpack
