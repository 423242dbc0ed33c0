#include "core/shape.h"

#include "core/error.h"

namespace mf {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::span<const int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const int64_t> dims) {
  MF_CHECK(dims.size() <= static_cast<size_t>(kMaxDims), "tensor rank {} exceeds the maximum of {}", dims.size(),
           kMaxDims);
  n_ = static_cast<int>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    MF_CHECK(dims[i] >= 0, "negative dimension {} in shape", dims[i]);
    d_[i] = dims[i];
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < n_; ++i) n *= d_[static_cast<size_t>(i)];
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < n_; ++i) {
    if (i) s += ", ";
    s += std::to_string(d_[static_cast<size_t>(i)]);
  }
  return s + "]";
}

bool Shape::operator==(const Shape& o) const {
  if (n_ != o.n_) return false;
  for (int i = 0; i < n_; ++i)
    if (d_[static_cast<size_t>(i)] != o.d_[static_cast<size_t>(i)]) return false;
  return true;
}

}  // namespace mf
