// Channel-window ops: slicing, gated products and per-channel affine maps, in plain loops.
#include "ops/ref/ref_backend.h"

namespace mf {

void RefBackend::channel_slice(const Tensor& x, int64_t offset, Tensor& y) {
  const int64_t C = x.shape().last(), w = y.shape().last(), rows = y.numel() / w;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < w; ++j) y.data()[r * w + j] = x.data()[r * C + offset + j];
}

void RefBackend::channel_slice_backward(const Tensor& dy, int64_t offset, Tensor& dx) {
  const int64_t C = dx.shape().last(), w = dy.shape().last(), rows = dy.numel() / w;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < w; ++j) dx.data()[r * C + offset + j] += dy.data()[r * w + j];
}

void RefBackend::glu(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                     const Activation& act, Tensor& y) {
  const int64_t Ct = t.shape().last(), w = y.shape().last(), rows = y.numel() / w;
  const int64_t cw = c ? c->shape().last() : 0, from_t = w - cw;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < w; ++j) {
      const double g = apply_activation(act, t.data()[r * Ct + gate_offset + j]);
      const double v = j < from_t ? t.data()[r * Ct + value_offset + j] : c->data()[r * cw + j - from_t];
      y.data()[r * w + j] = static_cast<float>(g * v);
    }
}

void RefBackend::glu_backward(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                              const Activation& act, const Tensor& dy, Tensor& dt, Tensor* dc) {
  const int64_t Ct = t.shape().last(), w = dy.shape().last(), rows = dy.numel() / w;
  const int64_t cw = c ? c->shape().last() : 0, from_t = w - cw;
  dt.fill(0.f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < w; ++j) {
      const double gin = t.data()[r * Ct + gate_offset + j];
      const double g = apply_activation(act, static_cast<float>(gin));
      const double v = j < from_t ? t.data()[r * Ct + value_offset + j] : c->data()[r * cw + j - from_t];
      const double d = dy.data()[r * w + j];
      // The gate and value windows may overlap only when the caller says so; accumulate to be safe.
      dt.data()[r * Ct + gate_offset + j] += static_cast<float>(d * v * activation_derivative(act, gin));
      if (j < from_t)
        dt.data()[r * Ct + value_offset + j] += static_cast<float>(d * g);
      else if (dc)
        dc->data()[r * cw + j - from_t] = static_cast<float>(d * g);
    }
}

void RefBackend::channel_affine(const Tensor& x, const Tensor& alpha, const Tensor& beta, Tensor& y) {
  const int64_t C = x.shape().last(), rows = x.numel() / C;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c)
      y.data()[r * C + c] =
          static_cast<float>(static_cast<double>(x.data()[r * C + c]) * alpha.data()[c] + beta.data()[c]);
}

void RefBackend::channel_affine_backward(const Tensor& x, const Tensor& alpha, const Tensor& dy, Tensor& dx,
                                         Tensor* dalpha, Tensor* dbeta) {
  const int64_t C = x.shape().last(), rows = x.numel() / C;
  for (int64_t c = 0; c < C; ++c) {
    double da = 0, db = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const double d = dy.data()[r * C + c];
      dx.data()[r * C + c] = static_cast<float>(d * alpha.data()[c]);
      da += d * x.data()[r * C + c];
      db += d;
    }
    if (dalpha) dalpha->data()[c] += static_cast<float>(da);
    if (dbeta) dbeta->data()[c] += static_cast<float>(db);
  }
}

}  // namespace mf
