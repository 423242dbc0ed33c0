#include "input.h"

#include <fmt/format.h>

#include <string>

namespace py = pybind11;

namespace mf::python {

namespace {

constexpr const char* kContiguousHint =
    "copy it first with numpy.ascontiguousarray(x) (or x.contiguous() for a torch tensor)";

// The numpy name of a buffer's struct-module format ("<f" -> float32), for error messages.
std::string buffer_dtype_name(const char* format, Py_ssize_t itemsize) {
  std::string f = format ? format : "B";
  std::string order;
  if (!f.empty() && std::string("@=<>!").find(f[0]) != std::string::npos) {
    order = f[0] == '>' || f[0] == '!' ? "big-endian " : "";
    f.erase(0, 1);
  }
  static const std::pair<const char*, const char*> names[] = {
      {"f", "float32"}, {"d", "float64"}, {"e", "float16"}, {"g", "float128"},   {"b", "int8"},
      {"B", "uint8"},   {"h", "int16"},   {"H", "uint16"},  {"i", "int32"},      {"I", "uint32"},
      {"q", "int64"},   {"Q", "uint64"},  {"?", "bool"},    {"Zf", "complex64"}, {"Zd", "complex128"}};
  for (const auto& [code, name] : names)
    if (f == code) return order + name;
  if (f == "l" || f == "L") return fmt::format("{}int{}", f == "L" ? "u" : "", 8 * itemsize);
  return fmt::format("format '{}'", format ? format : "");
}

std::string dlpack_dtype_name(const dlpack::DataType& t) {
  const char* kind = t.code == dlpack::kFloat     ? "float"
                     : t.code == dlpack::kInt     ? "int"
                     : t.code == dlpack::kUInt    ? "uint"
                     : t.code == dlpack::kBfloat  ? "bfloat"
                     : t.code == dlpack::kComplex ? "complex"
                     : t.code == dlpack::kBool    ? "bool"
                                                  : "type code ";
  std::string name = t.code == dlpack::kBool ? "bool" : fmt::format("{}{}", kind, t.bits);
  return t.lanes == 1 ? name : fmt::format("{}x{}", name, t.lanes);
}

[[noreturn]] void wrong_dtype(const std::string& got) {
  throw py::type_error(fmt::format(
      "model input must be float32; got {} (convert it with x.astype(numpy.float32), or x.float() for a torch "
      "tensor)",
      got));
}

// Row-major with unit element stride; dimensions of size 1 may have any stride.
bool c_contiguous(const int64_t* shape, const int64_t* strides_in_elements, int ndim) {
  int64_t expected = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides_in_elements[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

}  // namespace

std::string shape_str(const int64_t* dims, int ndim) {
  std::string s = "(";
  for (int i = 0; i < ndim; ++i) s += fmt::format("{}{}", i ? ", " : "", dims[i]);
  return s + (ndim == 1 ? ",)" : ")");
}

InputBatch::InputBatch(py::handle object) {
  // The buffer protocol first: numpy arrays have both, and their __dlpack__ refuses read-only ones.
  if (PyObject_CheckBuffer(object.ptr())) {
    from_buffer(object);
  } else if (py::hasattr(object, "__dlpack__")) {
    from_dlpack(object);
  } else {
    throw py::type_error(fmt::format(
        "model input must be a float32 array [N, C, H, W] or [C, H, W]: a numpy array, or an object with the "
        "buffer protocol or __dlpack__ (a torch CPU tensor); got {}",
        std::string(py::str(py::type::of(object)))));
  }
}

void InputBatch::set_shape(const int64_t* dims, int ndim) {
  if (ndim != 3 && ndim != 4)
    throw py::value_error(
        fmt::format("model input must be a batch of images (N, C, H, W) or one image (C, H, W); got shape {}",
                    shape_str(dims, ndim)));
  const int offset = ndim == 3 ? 1 : 0;
  shape_[0] = 1;
  for (int i = 0; i < ndim; ++i) shape_[static_cast<size_t>(i + offset)] = dims[i];
}

void InputBatch::from_buffer(py::handle object) {
  Py_buffer& view_ = buffer_.view;
  if (PyObject_GetBuffer(object.ptr(), &view_, PyBUF_STRIDES | PyBUF_FORMAT) != 0) throw py::error_already_set();
  buffer_.held = true;
  const std::string fmt_name = buffer_dtype_name(view_.format, view_.itemsize);
  if (fmt_name != "float32" || view_.itemsize != 4) wrong_dtype(fmt_name);
  std::array<int64_t, 8> dims{}, strides{};
  const int ndim = view_.ndim;
  if (ndim < 0 || ndim > 8) throw py::value_error(fmt::format("model input must have 3 or 4 dimensions; got {}", ndim));
  for (int i = 0; i < ndim; ++i) {
    dims[static_cast<size_t>(i)] = view_.shape[i];
    // Strides in bytes; one that is not a whole number of floats is never contiguous.
    const Py_ssize_t st = view_.strides ? view_.strides[i] : 0;
    strides[static_cast<size_t>(i)] = st % 4 == 0 ? st / 4 : -1;
  }
  set_shape(dims.data(), ndim);
  if (view_.strides && !c_contiguous(dims.data(), strides.data(), ndim))
    throw py::value_error(
        fmt::format("model input is not C-contiguous (shape {}, strides in bytes {}); {}", shape_str(dims.data(), ndim),
                    shape_str(reinterpret_cast<const int64_t*>(view_.strides), ndim), kContiguousHint));
  data_ = static_cast<const float*>(view_.buf);
}

void InputBatch::from_dlpack(py::handle object) {
  py::object capsule = object.attr("__dlpack__")();
  if (!PyCapsule_IsValid(capsule.ptr(), dlpack::kCapsuleName))
    throw py::type_error("__dlpack__() did not return a DLPack capsule (\"dltensor\"), or it was used already");
  auto* managed = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), dlpack::kCapsuleName));
  if (managed == nullptr) throw py::error_already_set();
  // Taken: from here on the deleter is ours to call (the producer's capsule destructor skips it).
  if (PyCapsule_SetName(capsule.ptr(), dlpack::kUsedCapsuleName) != 0) throw py::error_already_set();
  dlpack_.tensor = managed;
  const dlpack::Tensor& t = managed->dl_tensor;
  if (t.device.device_type != dlpack::kCPU)
    throw py::value_error(fmt::format(
        "model input is on DLPack device type {} (id {}); the engine reads CPU memory: move it first (x.cpu())",
        t.device.device_type, t.device.device_id));
  if (!(t.dtype.code == dlpack::kFloat && t.dtype.bits == 32 && t.dtype.lanes == 1))
    wrong_dtype(dlpack_dtype_name(t.dtype));
  if (t.ndim < 0 || t.ndim > 8)
    throw py::value_error(fmt::format("model input must have 3 or 4 dimensions; got {}", t.ndim));
  set_shape(t.shape, t.ndim);
  if (t.strides && !c_contiguous(t.shape, t.strides, t.ndim))
    throw py::value_error(fmt::format("model input is not C-contiguous (shape {}, strides in elements {}); {}",
                                      shape_str(t.shape, t.ndim), shape_str(t.strides, t.ndim), kContiguousHint));
  data_ = reinterpret_cast<const float*>(static_cast<const char*>(t.data) + t.byte_offset);
}

}  // namespace mf::python
