// Shape: up to six dimensions stored inline (no heap), the extent list of a dense tensor.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

namespace mf {

class Shape {
 public:
  static constexpr int kMaxDims = 6;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::span<const int64_t> dims);

  int ndim() const { return n_; }
  // Negative indices count from the end, as in Python.
  int64_t operator[](int i) const { return d_[static_cast<size_t>(i < 0 ? i + n_ : i)]; }
  int64_t& operator[](int i) { return d_[static_cast<size_t>(i < 0 ? i + n_ : i)]; }
  int64_t numel() const;
  // Product of all dimensions but the last: the number of "rows" for row-wise ops.
  int64_t rows() const { return n_ == 0 ? 1 : numel() / d_[static_cast<size_t>(n_ - 1)]; }
  int64_t last() const { return n_ == 0 ? 1 : d_[static_cast<size_t>(n_ - 1)]; }

  std::vector<int64_t> vec() const { return {d_.begin(), d_.begin() + n_}; }
  std::string str() const;  // "[2, 56, 56, 64]"

  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }

 private:
  std::array<int64_t, kMaxDims> d_{};
  int n_ = 0;
};

}  // namespace mf
