// nn.ConvTranspose2d on oneDNN: it is the adjoint of conv2d with the same geometry and weight (read as
// conv2d's OIHW [Ci, Co, kh, kw]), so its forward is conv2d's backward-data primitive and its input
// gradient conv2d's forward; the weight gradient is conv2d's backward-weights with the roles of input
// and output swapped. Only the bias (forward) and its gradient are loops of their own.
#include "ops/cpu/cpu_backend.h"

namespace mf {

void CpuBackend::conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g,
                                  Tensor& y) {
  // conv2d_backward reads only the shape of its input argument when no weight gradient is asked for.
  conv2d_backward(y, w, g, x, &y, nullptr, nullptr);
  if (!b) return;
  const int64_t C = y.dim(3), rows = y.numel() / C;
  const float* bias = b->data();
  float* Y = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* p = Y + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) p[c] += bias[c];
  }
}

void CpuBackend::conv_transpose2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                                           Tensor* dx, Tensor* dw, Tensor* db) {
  if (dx) conv2d(dy, w, nullptr, g, *dx);
  if (dw) conv2d_backward(dy, w, g, x, nullptr, dw, nullptr);
  if (db) {
    const int64_t C = dy.dim(3), rows = dy.numel() / C;
    const float* G = dy.data();
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
#pragma omp parallel for reduction(+ : acc) schedule(static)
      for (int64_t r = 0; r < rows; ++r) acc += G[r * C + c];
      db->data()[c] += static_cast<float>(acc);
    }
  }
}

}  // namespace mf
