// CAS-ViT's gating x ⊙ f(g) (Backend::gate) as plain loops, accumulating the gate's gradient in double.
#include <cmath>
#include <vector>

#include "ops/ref/ref_backend.h"

namespace mf {

namespace {
// Where element i of x reads its gate: g itself, its position (one value per position), or its sample
// and channel.
struct GateIndex {
  enum class Kind { full, position, channel } kind;
  int64_t C, per_sample;
  GateIndex(const Tensor& x, const Tensor& g)
      : kind(g.shape() == x.shape() ? Kind::full : g.ndim() == x.ndim() ? Kind::position : Kind::channel),
        C(x.shape().last()), per_sample(x.numel() / x.dim(0)) {}
  int64_t operator()(int64_t i) const {
    switch (kind) {
      case Kind::full: return i;
      case Kind::position: return i / C;
      case Kind::channel: return i / per_sample * C + i % C;
    }
    return i;
  }
};

double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }
}  // namespace

void RefBackend::gate(const Tensor& x, const Tensor& g, bool use_sigmoid, Tensor& y) {
  const GateIndex at(x, g);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = g.data()[at(i)];
    y.data()[i] = static_cast<float>(x.data()[i] * (use_sigmoid ? sigmoid(v) : v));
  }
}

void RefBackend::gate_backward(const Tensor& x, const Tensor& g, bool use_sigmoid, const Tensor& dy, Tensor& dx,
                               Tensor& dg) {
  const GateIndex at(x, g);
  std::vector<double> acc(static_cast<size_t>(g.numel()), 0.0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t j = at(i);
    const double v = g.data()[j], s = use_sigmoid ? sigmoid(v) : v;
    dx.data()[i] = static_cast<float>(dy.data()[i] * s);
    acc[static_cast<size_t>(j)] += static_cast<double>(dy.data()[i]) * x.data()[i] * (use_sigmoid ? s * (1 - s) : 1.0);
  }
  for (int64_t j = 0; j < g.numel(); ++j) dg.data()[j] = static_cast<float>(acc[static_cast<size_t>(j)]);
}

}  // namespace mf
