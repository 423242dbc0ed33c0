// A float32 image batch read in place from a Python object: a numpy array or anything else with the
// buffer protocol, or anything with __dlpack__ (a torch CPU tensor). Nothing is copied; a layout the
// engine cannot read in place is refused with what to do instead.
#pragma once

#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>

#include "dlpack.h"

namespace mf::python {

class InputBatch {
 public:
  // Throws pybind11::type_error (not a float32 array at all) or pybind11::value_error (wrong rank,
  // not C-contiguous, not in CPU memory), each message saying how to fix it. A (C, H, W) image is
  // read as a batch of one.
  explicit InputBatch(pybind11::handle object);
  // Destruction gives the memory back to its producer: it needs the GIL.
  InputBatch(const InputBatch&) = delete;
  InputBatch& operator=(const InputBatch&) = delete;

  const float* data() const { return data_; }
  const std::array<int64_t, 4>& shape() const { return shape_; }  // N, C, H, W

 private:
  void from_buffer(pybind11::handle object);
  void from_dlpack(pybind11::handle object);
  void set_shape(const int64_t* dims, int ndim);

  // Members, not destructor code, so that a constructor that throws half-way still lets go.
  struct HeldBuffer {
    Py_buffer view{};
    bool held = false;
    ~HeldBuffer() {
      if (held) PyBuffer_Release(&view);
    }
  };
  struct HeldDlpack {
    dlpack::ManagedTensor* tensor = nullptr;
    ~HeldDlpack() {
      if (tensor && tensor->deleter) tensor->deleter(tensor);
    }
  };

  const float* data_ = nullptr;
  std::array<int64_t, 4> shape_{};
  HeldBuffer buffer_;
  HeldDlpack dlpack_;
};

// "(2, 3, 224, 224)", as Python prints a shape tuple.
std::string shape_str(const int64_t* dims, int ndim);

}  // namespace mf::python
