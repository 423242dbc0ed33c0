#include <cmath>
#include <vector>

#include "ops/ref/ref_backend.h"

namespace mf {

void RefBackend::attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) {
  const int64_t B = qkv.dim(0), N = qkv.dim(1), A = static_cast<int64_t>(heads) * head_dim;
  const float* QKV = qkv.data();
  float* Y = y.data();
  std::vector<double> logits(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b)
    for (int h = 0; h < heads; ++h)
      for (int64_t i = 0; i < N; ++i) {
        const float* q = QKV + (b * N + i) * 3 * A + h * head_dim;
        double mx = -INFINITY;
        for (int64_t j = 0; j < N; ++j) {
          const float* k = QKV + (b * N + j) * 3 * A + A + h * head_dim;
          double s = 0;
          for (int d = 0; d < head_dim; ++d) s += static_cast<double>(q[d]) * k[d];
          logits[static_cast<size_t>(j)] = s * scale;
          mx = std::max(mx, logits[static_cast<size_t>(j)]);
        }
        double denom = 0;
        for (int64_t j = 0; j < N; ++j) denom += (logits[static_cast<size_t>(j)] = std::exp(logits[static_cast<size_t>(j)] - mx));
        for (int d = 0; d < head_dim; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < N; ++j)
            acc += logits[static_cast<size_t>(j)] * QKV[(b * N + j) * 3 * A + 2 * A + h * head_dim + d];
          Y[(b * N + i) * A + h * head_dim + d] = static_cast<float>(acc / denom);
        }
      }
}

}  // namespace mf
