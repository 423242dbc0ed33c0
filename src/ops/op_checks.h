// The argument checks and output allocation shared by the op dispatchers (ops.cpp, family_ops.cpp).
#pragma once

#include "core/error.h"
#include "ops/ops.h"

namespace mf::op::detail {

// An op's output on the backend's device, in its activation dtype.
inline Tensor out(const Exec& e, const Shape& s) {
  return Tensor::empty(s, e.backend->device(), e.backend->activation_dtype());
}

inline void check_vec(const Tensor* t, int64_t n, const char* what, OpKind op) {
  if (!t) return;
  MF_CHECK(t->numel() == n, "{}: {} has {} elements, expected {}", op_name(op), what, t->numel(), n);
}

inline void check_rank(const Tensor& x, int rank, OpKind op) {
  MF_CHECK(x.ndim() == rank, "{}: expected a rank-{} input, got shape {}", op_name(op), rank, x.shape().str());
}

inline void check_grad(const Tensor* g, const Tensor& like, const char* what, OpKind op) {
  if (g) MF_CHECK(g->shape() == like.shape(), "{} backward: {} gradient has shape {}, expected {}", op_name(op), what,
                  g->shape().str(), like.shape().str());
}

}  // namespace mf::op::detail
