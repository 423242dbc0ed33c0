// PatchTSMixer's gated attention (Backend::softmax_gate): y = x ⊙ softmax(logits) over the middle
// axis of [A, N, I], in double, one (a, i) column at a time.
#include <cmath>
#include <vector>

#include "ops/ref/ref_backend.h"

namespace mf {

namespace {
// The softmax of column (a, i) of logits [A, N, I] into s[0..N).
void column_softmax(const float* L, int64_t N, int64_t I, std::vector<double>& s) {
  double mx = -INFINITY;
  for (int64_t n = 0; n < N; ++n) mx = std::max(mx, static_cast<double>(L[n * I]));
  double sum = 0;
  for (int64_t n = 0; n < N; ++n) sum += s[static_cast<size_t>(n)] = std::exp(L[n * I] - mx);
  for (int64_t n = 0; n < N; ++n) s[static_cast<size_t>(n)] /= sum;
}
}  // namespace

void RefBackend::softmax_gate(const Tensor& x, const Tensor& logits, Tensor& y) {
  const int64_t A = x.dim(0), N = x.dim(1), I = x.dim(2);
  std::vector<double> s(static_cast<size_t>(N));
  for (int64_t a = 0; a < A; ++a)
    for (int64_t i = 0; i < I; ++i) {
      const int64_t base = a * N * I + i;
      column_softmax(logits.data() + base, N, I, s);
      for (int64_t n = 0; n < N; ++n)
        y.data()[base + n * I] = static_cast<float>(x.data()[base + n * I] * s[static_cast<size_t>(n)]);
    }
}

void RefBackend::softmax_gate_backward(const Tensor& x, const Tensor& logits, const Tensor& dy, Tensor& dx,
                                       Tensor& dlogits) {
  const int64_t A = x.dim(0), N = x.dim(1), I = x.dim(2);
  std::vector<double> s(static_cast<size_t>(N));
  for (int64_t a = 0; a < A; ++a)
    for (int64_t i = 0; i < I; ++i) {
      const int64_t base = a * N * I + i;
      column_softmax(logits.data() + base, N, I, s);
      double dot = 0;  // Σ_n s g, g = dy ⊙ x (the gradient reaching the softmax's output)
      for (int64_t n = 0; n < N; ++n)
        dot += s[static_cast<size_t>(n)] * dy.data()[base + n * I] * x.data()[base + n * I];
      for (int64_t n = 0; n < N; ++n) {
        const double sn = s[static_cast<size_t>(n)], g = static_cast<double>(dy.data()[base + n * I]);
        dx.data()[base + n * I] = static_cast<float>(g * sn);
        dlogits.data()[base + n * I] = static_cast<float>(sn * (g * x.data()[base + n * I] - dot));
      }
    }
}

}  // namespace mf
